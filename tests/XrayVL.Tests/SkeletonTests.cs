using XrayVL.IO;
using XrayVL.Tests.Support;

namespace XrayVL.Tests;

public class SkeletonTests
{
    [Fact]
    public void TorchSharpNativeLibraryLoads()
    {
        using var x = TorchSharp.torch.ones(2, 3);
        Assert.Equal(6f, x.sum().item<float>());
    }

    [Fact]
    public void SharedDataIsFound() => Assert.True(File.Exists(SharedData.File("iu-xray", "openi-en.json")));

    [Fact]
    public void AtomicWriteReplacesWholeFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"xrayvl-atomic-{Guid.NewGuid():N}.json");
        AtomicFile.WriteAllText(path, "{\"a\":1}");
        AtomicFile.WriteAllText(path, "{\"b\":2}");
        Assert.Equal("{\"b\":2}", File.ReadAllText(path));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + ".tmp-*"));
        File.Delete(path);
    }
}
