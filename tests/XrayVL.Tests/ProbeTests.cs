namespace XrayVL.Tests;

public class ProbeTests
{
    [Fact]
    public void TorchLoads() => Assert.Equal("4", XrayVL.Probe.Run());
}
