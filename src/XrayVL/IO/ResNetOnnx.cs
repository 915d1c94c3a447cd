using XrayVL.Imaging;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// Turns an ONNX ResNet with basic blocks (such as the ImageNet ResNet-18 that NuGet's
/// Microsoft.ML.DnnImageFeaturizer.ResNet18 ships, exported from CNTK) into <see cref="ResNetEncoder"/>'s torchvision keys,
/// by walking the graph rather than trusting initializer names:
/// stem Conv → BatchNormalization → Relu → MaxPool gives `conv1`, `bn1`; every Add → Relu closes one basic block, whose
/// main path is Conv → BN → Relu → Conv → BN (`conv1`, `bn1`, `conv2`, `bn2`) and whose shortcut is either the block's
/// input or a 1×1 Conv → BN (`downsample.0`, `downsample.1`); a block with a strided shortcut opens the next stage
/// (`layer1`..`layer4`). ONNX BatchNormalization's inputs (scale, B, mean, var) are torch's (weight, bias, running_mean,
/// running_var). The ONNX is read as the graph declares it; anything the encoder would compute differently is refused:
/// convolutions with bias, groups or dilation, BN epsilon other than torch's 1e-5, and padding other than "k/2 at the
/// start" — CNTK pads strided layers asymmetrically (stem begin 3 / end 2, max-pool and strided 3×3 begin 1 / end 0);
/// where every strided layer's input side is even (image sizes that are multiples of 32, 224 included) that gives the
/// same output size as torch's symmetric k/2 and no window reaches the extra end padding, so the two are identical;
/// other sizes are refused here.
/// </summary>
public static class ResNetOnnx
{
    /// <summary>A converted encoder: its config, its state dict (torchvision keys) and the preprocessing it expects.</summary>
    public sealed record Converted(VisionConfig Config, Dictionary<string, Tensor> Weights, PreprocessConfig Preprocess) : IDisposable
    {
        public void Dispose()
        {
            foreach (var t in Weights.Values) t.Dispose();
        }
    }

    private const float TorchBatchNormEps = 1e-5f;

    /// <summary>
    /// Converts the graph. <paramref name="channels"/> 3 keeps the RGB stem (the ONNX's BGR input order flipped to RGB);
    /// 1 sums the stem's three input channels into one, the same function on a gray image fed as R = G = B.
    /// <paramref name="channelMeans"/> are the per-channel values (0–255, RGB) the ONNX expects subtracted from 0–255
    /// pixels; the preprocessing written beside the weights reproduces that from [0, 1] pixels (mean / 255, std 1/255).
    /// <paramref name="keepLayers"/> keeps only the first blocks of each stage (e.g. [2, 2, 2, 1] drops the two last
    /// 512-wide blocks, 9.4M of the 15.9M values, for a smaller model): a later block of a stage adds a residual to the
    /// stage's first-block output, so the shorter stack is the same network with those refinements left out.
    /// </summary>
    public static Converted Convert(OnnxGraph graph, int channels, float[] channelMeans, int imageSize = 224, int[]? keepLayers = null)
    {
        if (channels is not (1 or 3)) throw new XrayVLException($"channels must be 1 or 3, got {channels}");
        if (channelMeans.Length != 3) throw new XrayVLException("channel means: three values (R, G, B) expected");
        if (imageSize <= 0 || imageSize % 32 != 0)
            throw new XrayVLException($"image size {imageSize}: CNTK's asymmetric padding equals torch's only for multiples of 32");
        var producer = new Dictionary<string, OnnxNode>();
        foreach (var n in graph.Nodes)
            foreach (string o in n.Outputs) producer[o] = n;
        var weights = new Dictionary<string, Tensor>();
        OnnxNode Of(string value, string op, string context) =>
            producer.TryGetValue(value, out var n) && n.OpType == op
                ? n
                : throw new XrayVLException($"{context}: expected {op} to produce '{value}', found {(producer.TryGetValue(value, out var m) ? m.OpType : "a graph input")}");

        // Stem: the first Conv, its BatchNormalization, Relu and MaxPool.
        var stemConv = graph.Nodes.FirstOrDefault(n => n.OpType == "Conv") ?? throw new XrayVLException("the graph has no Conv node");
        if (stemConv.Inputs[0] is var input && !graph.Inputs.Contains(input))
            throw new XrayVLException($"the first Conv reads '{input}', not a graph input");
        var stemBn = Consumer(graph, stemConv.Outputs[0], "BatchNormalization");
        var stemRelu = Consumer(graph, stemBn.Outputs[0], "Relu");
        var pool = Consumer(graph, stemRelu.Outputs[0], "MaxPool");
        CheckPadding(pool, 3, 2, "stem max-pool");
        var conv1 = ConvWeight(graph, stemConv, 7, 2, "stem conv");
        int width = (int)conv1.shape[0];
        // CNTK's image models take BGR; torchvision's take RGB: reverse the input channels, or sum them for gray input.
        weights["conv1.weight"] = channels == 3 ? conv1.flip(1) : conv1.sum(1, keepdim: true);
        conv1.Dispose();
        AddBatchNorm(graph, stemBn, "bn1", weights);

        // Blocks: each Add → Relu, in graph order.
        var layers = new List<int>();
        string previous = pool.Outputs[0];
        foreach (var add in graph.Nodes.Where(n => n.OpType == "Add"))
        {
            string at = $"block {layers.Sum() + 1} ('{add.Outputs[0]}')";
            if (add.Inputs.Count != 2) throw new XrayVLException($"{at}: Add with {add.Inputs.Count} inputs");
            OnnxNode? mainBn = null, shortcutBn = null;
            string? identity = null;
            foreach (string v in add.Inputs)
            {
                if (producer.TryGetValue(v, out var p) && p.OpType == "BatchNormalization")
                {
                    var conv = Of(p.Inputs[0], "Conv", at);
                    if (conv.IntsOr("kernel_shape", [0])[0] == 1) shortcutBn = p;
                    else mainBn = p;
                }
                else identity = v;
            }
            if (mainBn is null) throw new XrayVLException($"{at}: no Conv → BatchNormalization main path");
            var conv2 = Of(mainBn.Inputs[0], "Conv", at);
            var relu = Of(conv2.Inputs[0], "Relu", at);
            var bn1 = Of(relu.Inputs[0], "BatchNormalization", at);
            var c1 = Of(bn1.Inputs[0], "Conv", at);
            if (c1.Inputs[0] != previous) throw new XrayVLException($"{at}: its first Conv does not read the previous block's output");
            bool downsample = shortcutBn is not null;
            if (downsample == (identity is not null)) throw new XrayVLException($"{at}: needs exactly one shortcut (identity or Conv → BN)");
            if (identity is not null && identity != previous) throw new XrayVLException($"{at}: the identity shortcut is not the block's input");
            if (layers.Count == 0 || downsample)
            {
                if (layers.Count == 4) throw new XrayVLException($"{at}: a fifth stage; ResNetEncoder has four");
                layers.Add(0);
            }
            int stage = layers.Count, block = layers[^1]++;
            string key = $"layer{stage}.{block}";
            int stride = (int)c1.IntsOr("strides", [1])[0];
            if (stride != (downsample && stage > 1 ? 2 : 1))
                throw new XrayVLException($"{at}: stride {stride} where ResNetEncoder puts {(downsample && stage > 1 ? 2 : 1)}");
            weights[$"{key}.conv1.weight"] = ConvWeight(graph, c1, 3, stride, at);
            AddBatchNorm(graph, bn1, $"{key}.bn1", weights);
            weights[$"{key}.conv2.weight"] = ConvWeight(graph, conv2, 3, 1, at);
            AddBatchNorm(graph, mainBn, $"{key}.bn2", weights);
            if (shortcutBn is not null)
            {
                var sc = Of(shortcutBn.Inputs[0], "Conv", at);
                if (sc.Inputs[0] != previous) throw new XrayVLException($"{at}: the shortcut Conv does not read the block's input");
                weights[$"{key}.downsample.0.weight"] = ConvWeight(graph, sc, 1, stride, at);
                AddBatchNorm(graph, shortcutBn, $"{key}.downsample.1", weights);
            }
            previous = Consumer(graph, add.Outputs[0], "Relu").Outputs[0];
        }
        if (layers.Count != 4) throw new XrayVLException($"found {layers.Count} stages of basic blocks; ResNetEncoder needs four");
        if (keepLayers is not null)
        {
            if (keepLayers.Length != 4 || keepLayers.Zip(layers).Any(x => x.First < 1 || x.First > x.Second))
                throw new XrayVLException($"layers [{string.Join(",", keepLayers)}] cannot be cut from the graph's [{string.Join(",", layers)}] (1 to that many blocks per stage)");
            foreach (var key in weights.Keys.ToList())
            {
                if (!key.StartsWith("layer", StringComparison.Ordinal)) continue;
                int stage = key[5] - '0', block = int.Parse(key.AsSpan(7, key.IndexOf('.', 7) - 7));
                if (block < keepLayers[stage - 1]) continue;
                weights[key].Dispose();
                weights.Remove(key);
            }
            layers = [.. keepLayers];
        }
        // What follows the last block must be a global average (the pooled features this encoder's Pooled returns).
        var tail = graph.Nodes.FirstOrDefault(n => n.Inputs.Contains(previous));
        if (tail is not null && tail.OpType is not ("AveragePool" or "GlobalAveragePool" or "ReduceMean" or "Gemm" or "Flatten" or "Reshape"))
            throw new XrayVLException($"after the last block comes {tail.OpType}, not a pooling");

        var config = new VisionConfig
        {
            ModelType = "resnet",
            ImageSize = imageSize,
            NumChannels = channels,
            Layers = [.. layers],
            Block = "basic",
            Width = width,
        }.Validate();
        float[] rgbMeans = [.. channelMeans.Select(m => m / 255f)];
        var preprocess = new PreprocessConfig
        {
            ImageSize = imageSize,
            Channels = channels,
            // One channel carries R + G + B of a gray pixel through the summed stem: the three means' average keeps the
            // sum's offset the same (Σ_c (x − m_c) = 3x − Σ m_c = 3 (x − mean m)).
            Mean = channels == 3 ? rgbMeans : [rgbMeans.Average()],
            Std = channels == 3 ? [1 / 255f, 1 / 255f, 1 / 255f] : [1 / 255f],
        }.Validate();
        return new Converted(config, weights, preprocess);
    }

    /// <summary>The per-channel means (RGB, 0–255) of the preprocessing ONNX beside the model: its `MeanImage` initializer
    /// (1, 3, H, W) in BGR order, averaged over the image.</summary>
    public static float[] MeansFromPreprocessGraph(OnnxGraph prep)
    {
        var mean = prep.Initializers.Values.FirstOrDefault(t => t.Dims is [1, 3, _, _])
                   ?? throw new XrayVLException("the preprocessing graph has no (1, 3, H, W) mean image");
        long plane = mean.Dims[2] * mean.Dims[3];
        double[] bgr = new double[3];
        for (int c = 0; c < 3; c++)
        {
            for (long i = 0; i < plane; i++) bgr[c] += mean.Data[c * plane + i];
            bgr[c] /= plane;
        }
        return [(float)bgr[2], (float)bgr[1], (float)bgr[0]];
    }

    /// <summary>Writes a vision-tower folder (config.json, model.safetensors, preprocessor_config.json) that
    /// <see cref="Checkpoint.LoadVisionTower"/> loads.</summary>
    public static void Save(Converted converted, string dir, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var encoder = new ResNetEncoder(converted.Config);
        var state = new Dictionary<string, Tensor>(converted.Weights);
        // torchvision's BatchNorm2d also saves num_batches_tracked; the ONNX has none (0, as a fresh module).
        foreach (var key in encoder.state_dict().Keys.Where(k => k.EndsWith(".num_batches_tracked")))
            state[key] = zeros(1, dtype: ScalarType.Int64).squeeze();
        ModuleWeights.LoadInto(encoder, state, strict: true); // same keys and shapes as the module, or a clear error
        string full = Path.GetFullPath(dir);
        Directory.CreateDirectory(full);
        ConfigFile.Write(Path.Combine(full, Checkpoint.ConfigFileName), converted.Config);
        ConfigFile.Write(Path.Combine(full, Checkpoint.PreprocessorFileName), converted.Preprocess);
        ModuleWeights.SaveModule(Path.Combine(full, Checkpoint.WeightsFileName), encoder, metadata: metadata);
    }

    private static OnnxNode Consumer(OnnxGraph graph, string value, string op) =>
        graph.Nodes.FirstOrDefault(n => n.Inputs.Contains(value)) is { } n && n.OpType == op
            ? n
            : throw new XrayVLException($"expected {op} after '{value}'");

    private static Tensor ConvWeight(OnnxGraph graph, OnnxNode conv, int kernel, int stride, string context)
    {
        if (conv.Inputs.Count != 2) throw new XrayVLException($"{context}: Conv '{conv.Name}' has a bias; ResNetEncoder's convs have none");
        if (conv.IntsOr("group", [1])[0] != 1 || conv.IntsOr("dilations", [1, 1]).Any(d => d != 1))
            throw new XrayVLException($"{context}: Conv '{conv.Name}' uses groups or dilation");
        var k = conv.IntsOr("kernel_shape", []);
        var s = conv.IntsOr("strides", [1, 1]);
        if (k is not [var kh, var kw] || kh != kernel || kw != kernel || s.Any(v => v != stride))
            throw new XrayVLException($"{context}: Conv '{conv.Name}' is {string.Join("×", k)}/{string.Join(",", s)}, expected {kernel}×{kernel}/{stride}");
        CheckPadding(conv, kernel, stride, context);
        return Initializer(graph, conv.Inputs[1], 4);
    }

    /// <summary>ONNX pads are [top, left, bottom, right]: the start must be k/2 (torch's), the end k/2 or, on strided layers,
    /// down to k/2 − (stride − 1) — the CNTK form, which on even input sides never reaches a window (see the class notes).</summary>
    private static void CheckPadding(OnnxNode node, int kernel, int stride, string context)
    {
        var p = node.IntsOr("pads", [0, 0, 0, 0]);
        int half = kernel / 2;
        bool ok = p.Length == 4 && p[0] == half && p[1] == half && p[2] == p[3] && p[2] <= half && p[2] >= half - (stride - 1);
        if (!ok) throw new XrayVLException($"{context}: {node.OpType} '{node.Name}' pads ({string.Join(", ", p)}) cannot be reproduced (expected begin {half})");
    }

    private static void AddBatchNorm(OnnxGraph graph, OnnxNode bn, string key, Dictionary<string, Tensor> into)
    {
        if (bn.Inputs.Count != 5) throw new XrayVLException($"BatchNormalization '{bn.Name}' has {bn.Inputs.Count} inputs, expected 5");
        float eps = bn.Floats.TryGetValue("epsilon", out var e) ? e : 1e-5f;
        if (Math.Abs(eps - TorchBatchNormEps) > 1e-9) throw new XrayVLException($"BatchNormalization '{bn.Name}' epsilon {eps}; torch's BatchNorm2d uses 1e-5");
        into[$"{key}.weight"] = Initializer(graph, bn.Inputs[1], 1);
        into[$"{key}.bias"] = Initializer(graph, bn.Inputs[2], 1);
        into[$"{key}.running_mean"] = Initializer(graph, bn.Inputs[3], 1);
        into[$"{key}.running_var"] = Initializer(graph, bn.Inputs[4], 1);
    }

    private static Tensor Initializer(OnnxGraph graph, string name, int rank)
    {
        var t = graph.Initializers.TryGetValue(name, out var v) ? v : throw new XrayVLException($"'{name}' is not an initializer");
        if (t.Dims.Length != rank) throw new XrayVLException($"initializer '{name}' has rank {t.Dims.Length}, expected {rank}");
        return tensor(t.Data).reshape(t.Dims);
    }
}
