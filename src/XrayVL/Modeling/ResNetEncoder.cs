using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// torchvision's ResNet (v1.5: the stride sits on the 3×3 conv) without `avgpool`/`fc`, with its state-dict names:
/// `conv1.weight`, `bn1.{weight, bias, running_mean, running_var, num_batches_tracked}`,
/// `layer{1..4}.{j}.{conv1, bn1, conv2, bn2[, conv3, bn3]}.*`, `layer{k}.0.downsample.{0 (conv), 1 (bn)}.*`.
/// The selected stage's map (B, C, h, w) becomes h·w tokens (B, h·w, C), row by row. A ResNet has no CLS token, so the
/// "default" and "full" strategies give the same tokens. In eval mode BatchNorm uses its running statistics.
/// </summary>
public sealed class ResNetEncoder : VisionEncoder
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;
    private readonly int expansion;

    public ResNetEncoder(VisionConfig config, int featureLayer = -1, string selectStrategy = "default", Device? device = null)
        : base("ResNetEncoder", config, featureLayer, selectStrategy, hiddenStateCount: 5)
    {
        int w = config.Width;
        expansion = config.Block == "bottleneck" ? 4 : 1;
        conv1 = nn.Conv2d(config.NumChannels, w, 7, stride: 2, padding: 3, bias: false, device: device);
        bn1 = nn.BatchNorm2d(w, device: device);
        int inplanes = w;
        layer1 = Stage(ref inplanes, w, config.Layers[0], 1, device);
        layer2 = Stage(ref inplanes, 2 * w, config.Layers[1], 2, device);
        layer3 = Stage(ref inplanes, 4 * w, config.Layers[2], 2, device);
        layer4 = Stage(ref inplanes, 8 * w, config.Layers[3], 2, device);
        RegisterComponents();
        // A model whose every weight is about to be read from a file skips the random draw (minutes at 7B).
        if (!Layers.InitialisationSkipped) InitializeWeights();
    }

    /// <summary>Channels of hidden state k (0 = stem, k = layer k).</summary>
    public int ChannelsOf(int hiddenState) =>
        hiddenState == 0 ? Config.Width : Config.Width * (1 << (hiddenState - 1)) * expansion; // planes double per stage

    /// <summary>Side of hidden state k's square map for the configured image size (each stride-2 step: ⌊(s−1)/2⌋+1).</summary>
    public int SideOf(int hiddenState)
    {
        static int Halve(int s) => (s - 1) / 2 + 1;
        int side = Halve(Halve(Config.ImageSize)); // conv1 (stride 2) and maxpool (stride 2)
        for (int k = 2; k <= hiddenState; k++) side = Halve(side);
        return side;
    }

    public override int OutputDim => ChannelsOf(HiddenStateIndex);
    public override int NumTokens => SideOf(HiddenStateIndex) * SideOf(HiddenStateIndex);
    public override int PooledDim => ChannelsOf(4);

    /// <summary>Tokens of the selected stage. (B, h·w, C)</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var x = Stem(PreparePixels(pixels, conv1.weight!.dtype));
        for (int k = 1; k <= HiddenStateIndex; k++) x = StageModule(k).call(x);
        return x.flatten(2).transpose(1, 2).MoveToOuterDisposeScope(); // (B, C, h, w) → (B, h·w, C)
    }

    /// <summary>The five maps [stem, layer1, layer2, layer3, layer4], each (B, C, h, w) (runs every stage).</summary>
    public Tensor[] HiddenStates(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var states = new List<Tensor> { Stem(PreparePixels(pixels, conv1.weight!.dtype)) };
        for (int k = 1; k <= 4; k++) states.Add(StageModule(k).call(states[^1]));
        foreach (var s in states) s.MoveToOuterDisposeScope();
        return [.. states];
    }

    /// <summary>Global average of layer4's map: what torchvision's `fc` sees. (B, C4)</summary>
    public override Tensor Pooled(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var x = Stem(PreparePixels(pixels, conv1.weight!.dtype));
        for (int k = 1; k <= 4; k++) x = StageModule(k).call(x);
        return x.mean([2, 3]).MoveToOuterDisposeScope();
    }

    private Tensor Stem(Tensor x) // (B, C, S, S) → (B, W, S/4, S/4)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.relu(bn1.call(conv1.call(x)));
        return nn.functional.max_pool2d(h, 3, 2, 1).MoveToOuterDisposeScope();
    }

    private Sequential StageModule(int k) => k switch
    {
        1 => layer1,
        2 => layer2,
        3 => layer3,
        4 => layer4,
        _ => throw new ArgumentOutOfRangeException(nameof(k)),
    };

    private Sequential Stage(ref int inplanes, int planes, int blocks, int stride, Device? device)
    {
        var list = new List<nn.Module<Tensor, Tensor>>();
        for (int j = 0; j < blocks; j++)
        {
            int s = j == 0 ? stride : 1;
            list.Add(expansion == 4
                ? new ResNetBottleneck(inplanes, planes, s, device)
                : new ResNetBasicBlock(inplanes, planes, s, device));
            inplanes = planes * expansion;
        }
        return nn.Sequential(list.ToArray());
    }

    public override void InitializeWeights(Generator? generator = null)
    {
        // torchvision: He-normal (fan_out, ReLU: std = √(2 / (out · kh · kw))) for convs; BatchNorm weight 1, bias 0.
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (p.dim() == 4) p.normal_(0, Math.Sqrt(2.0 / (p.shape[0] * p.shape[2] * p.shape[3])), generator);
            else if (name.EndsWith(".bias")) p.zero_();
            else p.fill_(1.0);
        }
    }

    /// <summary>1×1 conv + BatchNorm on the shortcut when the shape changes (`downsample.0`, `downsample.1`).</summary>
    internal static Sequential? Downsample(int inplanes, int outplanes, int stride, Device? device) =>
        stride == 1 && inplanes == outplanes
            ? null
            : nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride: stride, bias: false, device: device),
                nn.BatchNorm2d(outplanes, device: device));
}

/// <summary>ResNet-18/34 block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).</summary>
public sealed class ResNetBasicBlock : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Sequential? downsample;

    public ResNetBasicBlock(int inplanes, int planes, int stride, Device? device) : base("ResNetBasicBlock")
    {
        conv1 = nn.Conv2d(inplanes, planes, 3, stride: stride, padding: 1, bias: false, device: device);
        bn1 = nn.BatchNorm2d(planes, device: device);
        conv2 = nn.Conv2d(planes, planes, 3, padding: 1, bias: false, device: device);
        bn2 = nn.BatchNorm2d(planes, device: device);
        downsample = ResNetEncoder.Downsample(inplanes, planes, stride, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.relu(bn1.call(conv1.call(x)));
        h = bn2.call(conv2.call(h));
        var shortcut = downsample?.call(x) ?? x;
        return nn.functional.relu(h + shortcut).MoveToOuterDisposeScope();
    }
}

/// <summary>ResNet-50+ block: 1×1 reduce → 3×3 (carries the stride) → 1×1 expand ×4, plus shortcut.</summary>
public sealed class ResNetBottleneck : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Conv2d conv3;
    private readonly BatchNorm2d bn3;
    private readonly Sequential? downsample;

    public ResNetBottleneck(int inplanes, int planes, int stride, Device? device) : base("ResNetBottleneck")
    {
        conv1 = nn.Conv2d(inplanes, planes, 1, bias: false, device: device);
        bn1 = nn.BatchNorm2d(planes, device: device);
        conv2 = nn.Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false, device: device);
        bn2 = nn.BatchNorm2d(planes, device: device);
        conv3 = nn.Conv2d(planes, planes * 4, 1, bias: false, device: device);
        bn3 = nn.BatchNorm2d(planes * 4, device: device);
        downsample = ResNetEncoder.Downsample(inplanes, planes * 4, stride, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.relu(bn1.call(conv1.call(x)));
        h = nn.functional.relu(bn2.call(conv2.call(h)));
        h = bn3.call(conv3.call(h));
        var shortcut = downsample?.call(x) ?? x;
        return nn.functional.relu(h + shortcut).MoveToOuterDisposeScope();
    }
}
