namespace XrayVL;

public static class Probe
{
    public static string Run() => TorchSharp.torch.ones(2, 2).sum().item<float>().ToString();
}
