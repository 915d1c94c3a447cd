using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class VisionEncoderTests
{
    // 32 px, patch 8 → a 4×4 grid of 16 patches + CLS.
    private static VisionConfig TinyClip(string act = "quick_gelu", int layers = 3) => new()
    {
        ImageSize = 32, PatchSize = 8, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = layers,
        NumAttentionHeads = 2, NumChannels = 3, HiddenAct = act,
    };

    private static VisionConfig TinyResNet(string block = "basic", int width = 8) => new()
    {
        ModelType = "resnet", ImageSize = 64, NumChannels = 1, Layers = [1, 1, 1, 1], Block = block, Width = width,
    };

    private static List<string> KeyShapes(nn.Module module) =>
        module.state_dict().Select(kv => $"{kv.Key} ({string.Join(", ", kv.Value.shape)})").Order(StringComparer.Ordinal).ToList();

    /// <summary>Every parameter and floating buffer random, so zero biases / unit norms cannot hide a mistake.</summary>
    /// <summary>Seeded weights from a generator of its own: torch's global one is shared with the tests running in parallel.</summary>
    private static void Randomize(nn.Module module, int seed)
    {
        using var generator = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in module.named_parameters())
            p.normal_(name.EndsWith("norm1.weight") || name.EndsWith("norm2.weight") ? 1.0 : 0.0, 0.3, generator);
        foreach (var (name, b) in module.named_buffers())
        {
            if (name.EndsWith("running_mean")) b.normal_(0, 0.3, generator);
            if (name.EndsWith("running_var")) b.uniform_(0.5, 2.0, generator);
        }
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tolerance)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= tolerance, $"max |diff| {diff:G3} > {tolerance:G3}");
    }

    [Fact]
    public void ClipKeysAndShapesMatchHuggingFaceNames()
    {
        using var enc = VisionEncoder.Create(TinyClip(layers: 2));
        string[] expected =
        [
            "vision_model.embeddings.class_embedding (16)",
            "vision_model.embeddings.patch_embedding.weight (16, 3, 8, 8)",
            "vision_model.embeddings.position_embedding.weight (17, 16)",
            "vision_model.encoder.layers.0.layer_norm1.bias (16)",
            "vision_model.encoder.layers.0.layer_norm1.weight (16)",
            "vision_model.encoder.layers.0.layer_norm2.bias (16)",
            "vision_model.encoder.layers.0.layer_norm2.weight (16)",
            "vision_model.encoder.layers.0.mlp.fc1.bias (32)",
            "vision_model.encoder.layers.0.mlp.fc1.weight (32, 16)",
            "vision_model.encoder.layers.0.mlp.fc2.bias (16)",
            "vision_model.encoder.layers.0.mlp.fc2.weight (16, 32)",
            "vision_model.encoder.layers.0.self_attn.k_proj.bias (16)",
            "vision_model.encoder.layers.0.self_attn.k_proj.weight (16, 16)",
            "vision_model.encoder.layers.0.self_attn.out_proj.bias (16)",
            "vision_model.encoder.layers.0.self_attn.out_proj.weight (16, 16)",
            "vision_model.encoder.layers.0.self_attn.q_proj.bias (16)",
            "vision_model.encoder.layers.0.self_attn.q_proj.weight (16, 16)",
            "vision_model.encoder.layers.0.self_attn.v_proj.bias (16)",
            "vision_model.encoder.layers.0.self_attn.v_proj.weight (16, 16)",
            "vision_model.encoder.layers.1.layer_norm1.bias (16)",
            "vision_model.encoder.layers.1.layer_norm1.weight (16)",
            "vision_model.encoder.layers.1.layer_norm2.bias (16)",
            "vision_model.encoder.layers.1.layer_norm2.weight (16)",
            "vision_model.encoder.layers.1.mlp.fc1.bias (32)",
            "vision_model.encoder.layers.1.mlp.fc1.weight (32, 16)",
            "vision_model.encoder.layers.1.mlp.fc2.bias (16)",
            "vision_model.encoder.layers.1.mlp.fc2.weight (16, 32)",
            "vision_model.encoder.layers.1.self_attn.k_proj.bias (16)",
            "vision_model.encoder.layers.1.self_attn.k_proj.weight (16, 16)",
            "vision_model.encoder.layers.1.self_attn.out_proj.bias (16)",
            "vision_model.encoder.layers.1.self_attn.out_proj.weight (16, 16)",
            "vision_model.encoder.layers.1.self_attn.q_proj.bias (16)",
            "vision_model.encoder.layers.1.self_attn.q_proj.weight (16, 16)",
            "vision_model.encoder.layers.1.self_attn.v_proj.bias (16)",
            "vision_model.encoder.layers.1.self_attn.v_proj.weight (16, 16)",
            "vision_model.post_layernorm.bias (16)",
            "vision_model.post_layernorm.weight (16)",
            "vision_model.pre_layrnorm.bias (16)",
            "vision_model.pre_layrnorm.weight (16)",
        ];
        Assert.Equal(expected, KeyShapes(enc));
    }

    [Fact]
    public void ResNetKeysAndShapesMatchTorchvisionNames()
    {
        using var enc = VisionEncoder.Create(TinyResNet());
        string[] expected =
        [
            "bn1.bias (8)", "bn1.num_batches_tracked ()", "bn1.running_mean (8)", "bn1.running_var (8)", "bn1.weight (8)",
            "conv1.weight (8, 1, 7, 7)",
            "layer1.0.bn1.bias (8)", "layer1.0.bn1.num_batches_tracked ()", "layer1.0.bn1.running_mean (8)",
            "layer1.0.bn1.running_var (8)", "layer1.0.bn1.weight (8)",
            "layer1.0.bn2.bias (8)", "layer1.0.bn2.num_batches_tracked ()", "layer1.0.bn2.running_mean (8)",
            "layer1.0.bn2.running_var (8)", "layer1.0.bn2.weight (8)",
            "layer1.0.conv1.weight (8, 8, 3, 3)", "layer1.0.conv2.weight (8, 8, 3, 3)",
            "layer2.0.bn1.bias (16)", "layer2.0.bn1.num_batches_tracked ()", "layer2.0.bn1.running_mean (16)",
            "layer2.0.bn1.running_var (16)", "layer2.0.bn1.weight (16)",
            "layer2.0.bn2.bias (16)", "layer2.0.bn2.num_batches_tracked ()", "layer2.0.bn2.running_mean (16)",
            "layer2.0.bn2.running_var (16)", "layer2.0.bn2.weight (16)",
            "layer2.0.conv1.weight (16, 8, 3, 3)", "layer2.0.conv2.weight (16, 16, 3, 3)",
            "layer2.0.downsample.0.weight (16, 8, 1, 1)",
            "layer2.0.downsample.1.bias (16)", "layer2.0.downsample.1.num_batches_tracked ()",
            "layer2.0.downsample.1.running_mean (16)", "layer2.0.downsample.1.running_var (16)",
            "layer2.0.downsample.1.weight (16)",
            "layer3.0.bn1.bias (32)", "layer3.0.bn1.num_batches_tracked ()", "layer3.0.bn1.running_mean (32)",
            "layer3.0.bn1.running_var (32)", "layer3.0.bn1.weight (32)",
            "layer3.0.bn2.bias (32)", "layer3.0.bn2.num_batches_tracked ()", "layer3.0.bn2.running_mean (32)",
            "layer3.0.bn2.running_var (32)", "layer3.0.bn2.weight (32)",
            "layer3.0.conv1.weight (32, 16, 3, 3)", "layer3.0.conv2.weight (32, 32, 3, 3)",
            "layer3.0.downsample.0.weight (32, 16, 1, 1)",
            "layer3.0.downsample.1.bias (32)", "layer3.0.downsample.1.num_batches_tracked ()",
            "layer3.0.downsample.1.running_mean (32)", "layer3.0.downsample.1.running_var (32)",
            "layer3.0.downsample.1.weight (32)",
            "layer4.0.bn1.bias (64)", "layer4.0.bn1.num_batches_tracked ()", "layer4.0.bn1.running_mean (64)",
            "layer4.0.bn1.running_var (64)", "layer4.0.bn1.weight (64)",
            "layer4.0.bn2.bias (64)", "layer4.0.bn2.num_batches_tracked ()", "layer4.0.bn2.running_mean (64)",
            "layer4.0.bn2.running_var (64)", "layer4.0.bn2.weight (64)",
            "layer4.0.conv1.weight (64, 32, 3, 3)", "layer4.0.conv2.weight (64, 64, 3, 3)",
            "layer4.0.downsample.0.weight (64, 32, 1, 1)",
            "layer4.0.downsample.1.bias (64)", "layer4.0.downsample.1.num_batches_tracked ()",
            "layer4.0.downsample.1.running_mean (64)", "layer4.0.downsample.1.running_var (64)",
            "layer4.0.downsample.1.weight (64)",
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), KeyShapes(enc));
    }

    [Fact]
    public void BottleneckBlocksExpandFourfoldWithTorchvisionNames()
    {
        using var enc = VisionEncoder.Create(TinyResNet("bottleneck", width: 4));
        var keys = KeyShapes(enc);
        // layer1.0 already needs a shortcut conv: 4 input channels, 16 output.
        string[] layer1 =
        [
            "layer1.0.bn1.weight (4)", "layer1.0.bn2.weight (4)", "layer1.0.bn3.weight (16)",
            "layer1.0.conv1.weight (4, 4, 1, 1)", "layer1.0.conv2.weight (4, 4, 3, 3)", "layer1.0.conv3.weight (16, 4, 1, 1)",
            "layer1.0.downsample.0.weight (16, 4, 1, 1)", "layer1.0.downsample.1.running_var (16)",
            "layer2.0.conv1.weight (8, 16, 1, 1)", "layer2.0.conv3.weight (32, 8, 1, 1)",
            "layer4.0.conv3.weight (128, 32, 1, 1)", "layer4.0.downsample.0.weight (128, 64, 1, 1)",
        ];
        Assert.All(layer1, k => Assert.Contains(k, keys));
        Assert.Equal(6 + 4 * (3 * 6 + 6), keys.Count); // stem; per block 3 convs + 3 BN×5, plus downsample conv + BN×5
        Assert.DoesNotContain(keys, k => k.StartsWith("fc."));
        Assert.Equal((128, 4), (enc.OutputDim, enc.NumTokens)); // 64 px → 2×2 after four halvings, 32·4 channels
    }

    // Published counts. CLIP ViT-B/16 vision (HF CLIPVisionModel, incl. pre/post LayerNorm):
    //   class 768 + patch 768·3·16·16 (no bias) + positions 197·768 + pre-LN 2·768
    //   + 12 × [4·(768² + 768) attention + 2·2·768 LayerNorms + (768·3072 + 3072) + (3072·768 + 768) MLP] + post-LN 2·768
    //   = 85,799,424 (the 85,798,656 often quoted is timm/DINO's ViT-B/16: patch bias, no pre-LN).
    // torchvision resnet18/34/50 totals 11,689,512 / 21,797,672 / 25,557,032 minus fc (512·1000+1000, 2048·1000+1000).
    [Theory]
    [InlineData("clip-vit-b16", 85_799_424L)]
    [InlineData("resnet18", 11_689_512L - 513_000L)]
    [InlineData("resnet34", 21_797_672L - 513_000L)]
    [InlineData("resnet50", 25_557_032L - 2_049_000L)]
    public void ParameterCountsMatchPublishedConfigsOnTheMetaDevice(string name, long expected)
    {
        var config = name switch
        {
            "clip-vit-b16" => new VisionConfig
            {
                ImageSize = 224, PatchSize = 16, HiddenSize = 768, IntermediateSize = 3072, NumHiddenLayers = 12,
                NumAttentionHeads = 12, NumChannels = 3, HiddenAct = "quick_gelu",
            },
            "resnet18" => new VisionConfig { ModelType = "resnet", NumChannels = 3, Layers = [2, 2, 2, 2] },
            "resnet34" => new VisionConfig { ModelType = "resnet", NumChannels = 3, Layers = [3, 4, 6, 3] },
            "resnet50" => new VisionConfig { ModelType = "resnet", NumChannels = 3, Layers = [3, 4, 6, 3], Block = "bottleneck" },
            _ => throw new ArgumentException(name),
        };
        using var enc = VisionEncoder.Create(config, device: META);
        Assert.All(enc.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal(expected, enc.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void ClipVitB16HyperparametersGiveLlavaTokenCounts()
    {
        var config = new VisionConfig { ImageSize = 224, PatchSize = 16, HiddenSize = 768, NumAttentionHeads = 12, NumChannels = 3 };
        using var enc = VisionEncoder.Create(config, -2, "default", META);
        Assert.Equal((196, 768), (enc.NumTokens, enc.OutputDim));
        using var full = VisionEncoder.Create(config, -1, "full", META);
        Assert.Equal(197, full.NumTokens);
    }

    [Theory]
    [InlineData(-1, "default", 3, 16)]
    [InlineData(-1, "full", 3, 17)]
    [InlineData(-2, "default", 2, 16)]
    [InlineData(-2, "full", 2, 17)]
    [InlineData(0, "full", 0, 17)]
    [InlineData(-4, "default", 0, 16)]
    [InlineData(3, "full", 3, 17)]
    public void ClipFeatureSelectionFollowsHfHiddenStateIndexing(int layer, string strategy, int index, int tokens)
    {
        using var enc = (ClipVisionEncoder)VisionEncoder.Create(TinyClip(), layer, strategy);
        Randomize(enc, 1);
        manual_seed(2);
        var x = randn(2, 3, 32, 32);
        using var _ = no_grad();
        var y = enc.call(x);
        Assert.Equal(new long[] { 2, tokens, 16 }, y.shape);
        Assert.Equal((index, tokens, 16), (enc.HiddenStateIndex, enc.NumTokens, enc.OutputDim));
        var state = enc.HiddenStates(x)[index]; // (B, 17, D)
        AssertClose(strategy == "full" ? state : state.narrow(1, 1, 16), y, 1e-6);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(-5)]
    public void OutOfRangeFeatureLayerIsAUserError(int layer)
    {
        var e = Assert.Throws<XrayVLException>(() => VisionEncoder.Create(TinyClip(), layer));
        Assert.Contains($"vision_feature_layer {layer}", e.Message);
        Assert.Throws<XrayVLException>(() => VisionEncoder.Create(TinyResNet(), layer > 0 ? 5 : -6));
    }

    [Fact]
    public void UnknownModelTypeOrStrategyIsAUserError()
    {
        var e = Assert.Throws<XrayVLException>(() => VisionEncoder.Create(TinyClip() with { ModelType = "swin" }));
        Assert.Contains("'swin'", e.Message);
        e = Assert.Throws<XrayVLException>(() => VisionEncoder.Create(TinyClip(), -1, "cls_patch"));
        Assert.Contains("'cls_patch'", e.Message);
    }

    [Fact]
    public void ComposedConfigPicksTheEncoderLayerAndStrategy()
    {
        var config = new VisionLanguageConfig { VisionConfig = TinyClip(), VisionFeatureLayer = -2, VisionFeatureSelectStrategy = "full" };
        using var enc = VisionEncoder.Create(config);
        Assert.IsType<ClipVisionEncoder>(enc);
        Assert.Equal((2, 17), (enc.HiddenStateIndex, enc.NumTokens));
        using var rn = VisionEncoder.Create(config with { VisionConfig = TinyResNet() });
        Assert.IsType<ResNetEncoder>(rn);
        Assert.Equal((3, 16, 32), (rn.HiddenStateIndex, rn.NumTokens, rn.OutputDim)); // layer3 of 64 px: 4×4, 4·8 channels
    }

    [Fact]
    public void PenultimateLayerEqualsRunningTheBlocksByHandAndStopsEarly()
    {
        using var enc = (ClipVisionEncoder)VisionEncoder.Create(TinyClip(), -2, "full");
        Randomize(enc, 3);
        manual_seed(4);
        var x = randn(2, 3, 32, 32);
        using var _ = no_grad();
        var manual = enc.Embed(x);
        for (int i = 0; i < 2; i++) manual = enc.EncoderLayers[i].call(manual); // hidden_states[2] of a 3-layer tower
        var y = enc.call(x);
        AssertClose(manual, y, 1e-6);
        AssertClose(enc.HiddenStates(x)[^2], y, 1e-6);

        // Poison the last block: the selected features must not change (it is never run), the full stack must.
        foreach (var p in enc.EncoderLayers[2].parameters()) p.fill_(double.NaN);
        AssertClose(manual, enc.call(x), 1e-6);
        Assert.True(enc.HiddenStates(x)[^1].isnan().any().item<bool>());
    }

    private static Tensor NaiveLayerNorm(Tensor x, Tensor w, Tensor b, double eps)
    {
        var mu = x.mean([-1], keepdim: true);
        var variance = (x - mu).pow(2).mean([-1], keepdim: true);
        return (x - mu) / (variance + eps).sqrt() * w + b;
    }

    [Theory]
    [InlineData("quick_gelu")]
    [InlineData("gelu")]
    public void EncoderBlockMatchesNaiveFloat64Implementation(string act)
    {
        using var enc = (ClipVisionEncoder)VisionEncoder.Create(TinyClip(act));
        Randomize(enc, 5);
        var sd = enc.state_dict();
        Tensor W(string key) => sd["vision_model.encoder.layers.1." + key].to(ScalarType.Float64);
        manual_seed(6);
        var x = randn(2, 5, 16); // (B, T, D)
        using var _ = no_grad();
        var actual = enc.EncoderLayers[1].call(x);

        var xd = x.to(ScalarType.Float64);
        var h = NaiveLayerNorm(xd, W("layer_norm1.weight"), W("layer_norm1.bias"), 1e-5);
        Tensor Proj(Tensor t, string name) => t.matmul(W($"self_attn.{name}.weight").t()) + W($"self_attn.{name}.bias");
        Tensor q = Proj(h, "q_proj"), k = Proj(h, "k_proj"), v = Proj(h, "v_proj");
        var heads = new List<Tensor>();
        for (int head = 0; head < 2; head++)
        {
            Tensor qh = q.narrow(2, head * 8, 8), kh = k.narrow(2, head * 8, 8), vh = v.narrow(2, head * 8, 8); // (B, T, 8)
            var scores = qh.matmul(kh.transpose(1, 2)) / Math.Sqrt(8); // (B, T, T)
            var e = (scores - scores.amax([-1], keepdim: true)).exp();
            heads.Add((e / e.sum([-1], keepdim: true)).matmul(vh));
        }
        var attn = cat(heads, 2).matmul(W("self_attn.out_proj.weight").t()) + W("self_attn.out_proj.bias");
        var r = xd + attn;
        var m = NaiveLayerNorm(r, W("layer_norm2.weight"), W("layer_norm2.bias"), 1e-5);
        m = m.matmul(W("mlp.fc1.weight").t()) + W("mlp.fc1.bias");
        m = act == "gelu" ? 0.5 * m * (1 + (m / Math.Sqrt(2)).erf()) : m / (1 + (-1.702 * m).exp());
        m = m.matmul(W("mlp.fc2.weight").t()) + W("mlp.fc2.bias");
        AssertClose(r + m, actual, 1e-5);
    }

    [Fact]
    public void EmbeddingsMatchNaivePatchExtractionRowByRow()
    {
        using var enc = (ClipVisionEncoder)VisionEncoder.Create(TinyClip());
        Randomize(enc, 7);
        var sd = enc.state_dict();
        Tensor W(string key) => sd["vision_model." + key].to(ScalarType.Float64);
        manual_seed(8);
        var x = randn(2, 3, 32, 32);
        using var _ = no_grad();
        var actual = enc.Embed(x); // (B, 17, 16)

        var kernel = W("embeddings.patch_embedding.weight").reshape(16, 3 * 8 * 8); // (D, C·P·P)
        var tokens = new List<Tensor> { W("embeddings.class_embedding").expand(2, 1, 16) };
        for (int gy = 0; gy < 4; gy++)
            for (int gx = 0; gx < 4; gx++)
            {
                var patch = x.to(ScalarType.Float64).narrow(2, gy * 8, 8).narrow(3, gx * 8, 8).reshape(2, 1, 3 * 8 * 8);
                tokens.Add(patch.matmul(kernel.t())); // (B, 1, D)
            }
        var expected = cat(tokens, 1) + W("embeddings.position_embedding.weight");
        expected = NaiveLayerNorm(expected, W("pre_layrnorm.weight"), W("pre_layrnorm.bias"), 1e-5);
        AssertClose(expected, actual, 1e-5);
    }

    [Fact]
    public void PooledIsPostLayerNormOfTheLastClsToken()
    {
        using var enc = (ClipVisionEncoder)VisionEncoder.Create(TinyClip());
        Randomize(enc, 9);
        var sd = enc.state_dict();
        manual_seed(10);
        var x = randn(2, 3, 32, 32);
        using var _ = no_grad();
        var cls = enc.HiddenStates(x)[^1].select(1, 0); // (B, D)
        var expected = NaiveLayerNorm(cls, sd["vision_model.post_layernorm.weight"], sd["vision_model.post_layernorm.bias"], 1e-5);
        AssertClose(expected, enc.Pooled(x), 1e-5);
    }

    [Fact]
    public void GrayscaleIsRepeatedForARgbTowerAndWrongSizesAreRefused()
    {
        using var enc = VisionEncoder.Create(TinyClip());
        manual_seed(11);
        var gray = randn(2, 1, 32, 32);
        using var _ = no_grad();
        AssertClose(enc.call(gray.expand(2, 3, 32, 32).contiguous()), enc.call(gray), 1e-6);
        var e = Assert.Throws<XrayVLException>(() => enc.call(randn(2, 3, 48, 48)));
        Assert.Contains("(B, 3, 32, 32)", e.Message);
        Assert.Contains("(2, 3, 48, 48)", e.Message);
        using var rn = VisionEncoder.Create(TinyResNet()); // 1-channel model: 3 channels are not silently mixed
        Assert.Throws<XrayVLException>(() => rn.call(randn(1, 3, 64, 64)));
    }

    [Fact]
    public void PositionTableInterpolationKeepsClsAndConstants()
    {
        manual_seed(12);
        var table = randn(17, 16); // CLS + 4×4 grid
        AssertClose(table, ClipVisionEncoder.InterpolatePositionEmbedding(table, 4), 0);
        var resized = ClipVisionEncoder.InterpolatePositionEmbedding(table, 6);
        Assert.Equal(new long[] { 37, 16 }, resized.shape);
        AssertClose(table.narrow(0, 0, 1), resized.narrow(0, 0, 1), 0);
        // A grid whose every cell holds the same vector stays that vector (bicubic weights sum to 1).
        var constant = cat([table.narrow(0, 0, 1), table.narrow(0, 1, 1).expand(16, 16)], 0);
        var grown = ClipVisionEncoder.InterpolatePositionEmbedding(constant, 7);
        AssertClose(table.narrow(0, 1, 1).expand(49, 16), grown.narrow(0, 1, 49), 1e-5);
        Assert.Throws<XrayVLException>(() => ClipVisionEncoder.InterpolatePositionEmbedding(randn(18, 16), 4));
    }

    [Fact]
    public void ResNet18At224Gives49TokensOf512AndLayer3Gives196Of256()
    {
        var config = new VisionConfig { ModelType = "resnet", ImageSize = 224, NumChannels = 1, Layers = [2, 2, 2, 2] };
        using var enc = VisionEncoder.Create(config);
        enc.eval();
        manual_seed(13);
        var x = randn(1, 1, 224, 224);
        using var _ = no_grad();
        var tokens = enc.call(x);
        Assert.Equal(new long[] { 1, 49, 512 }, tokens.shape);
        Assert.Equal((49, 512, 512), (enc.NumTokens, enc.OutputDim, enc.PooledDim));
        using var l3 = VisionEncoder.Create(config, -2);
        l3.load_state_dict(enc.state_dict());
        l3.eval();
        Assert.Equal(new long[] { 1, 196, 256 }, l3.call(x).shape);
        Assert.Equal((196, 256), (l3.NumTokens, l3.OutputDim));
        // Tokens are layer4's map read row by row; pooled is its spatial mean.
        var map = ((ResNetEncoder)enc).HiddenStates(x)[4]; // (1, 512, 7, 7)
        AssertClose(map[0, .., 2, 3], tokens[0, 2 * 7 + 3], 1e-6);
        AssertClose(map.mean([2, 3]), enc.Pooled(x), 1e-5);
    }

    [Fact]
    public void ResNetEvalModeUsesRunningStatisticsIndependentOfTheBatch()
    {
        using var enc = (ResNetEncoder)VisionEncoder.Create(TinyResNet());
        Randomize(enc, 14);
        enc.eval();
        manual_seed(15);
        var batch = randn(3, 1, 64, 64);
        using var _ = no_grad();
        var together = enc.call(batch);
        var alone = enc.call(batch.narrow(0, 1, 1));
        AssertClose(together.narrow(0, 1, 1), alone, 1e-5);

        // The stem by hand with the running statistics: relu((conv(x) − mean) / √(var + eps) · γ + β), then max-pool.
        var sd = enc.state_dict();
        Tensor P(string key) => sd[key].reshape(1, -1, 1, 1);
        var conv = nn.functional.conv2d(batch, sd["conv1.weight"], null, strides: [2, 2], padding: [3, 3]);
        var normed = (conv - P("bn1.running_mean")) / (P("bn1.running_var") + 1e-5).sqrt() * P("bn1.weight") + P("bn1.bias");
        var stem = nn.functional.max_pool2d(nn.functional.relu(normed), 3, 2, 1);
        AssertClose(stem, enc.HiddenStates(batch)[0], 1e-5);

        // In training mode the same image's features do depend on its batch-mates (batch statistics).
        enc.train();
        var trainTogether = enc.call(batch).narrow(0, 1, 1);
        var trainWithOther = enc.call(cat([batch.narrow(0, 1, 1), randn(2, 1, 64, 64) * 3], 0)).narrow(0, 0, 1);
        double diff = (trainTogether - trainWithOther).abs().max().item<float>();
        Assert.True(diff > 1e-3, $"train-mode outputs should differ, max diff {diff}");
    }

    [Theory]
    [InlineData("clip")]
    [InlineData("resnet")]
    public void BFloat16ForwardStaysCloseToFloat32(string kind)
    {
        var config = kind == "clip" ? TinyClip() : TinyResNet();
        using var fp32 = VisionEncoder.Create(config);
        Randomize(fp32, 16);
        using var bf16 = VisionEncoder.Create(config);
        bf16.load_state_dict(fp32.state_dict());
        bf16.to(ScalarType.BFloat16);
        fp32.eval();
        bf16.eval();
        using var inputs = new Generator(17);
        var x = randn([2, config.NumChannels, config.ImageSize, config.ImageSize], ScalarType.Float32, generator: inputs);
        using var _ = no_grad();
        var reference = fp32.call(x);
        var low = bf16.call(x);
        Assert.Equal(ScalarType.BFloat16, low.dtype);
        double relative = ((low.to(ScalarType.Float32) - reference).norm() / reference.norm()).item<float>();
        Assert.True(relative < 0.05, $"bf16 relative error {relative:G3}");
        Assert.False(low.isnan().any().item<bool>());
    }
}
