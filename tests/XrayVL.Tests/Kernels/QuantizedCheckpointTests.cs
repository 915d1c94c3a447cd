using TorchSharp;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Kernels;

/// <summary>Q8_0 weights in safetensors: `weight` I8 (out, in) + `weight_scale` F32 (out, in / 32) per linear layer.</summary>
public class QuantizedCheckpointTests
{
    [Fact]
    public void A_quantized_model_saves_its_int8_layout_and_loads_into_a_model_built_quantized()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var config = TinyLanguageModels.Config(tied: false);
        using var source = TinyLanguageModels.Create(config, seed: 7);
        int quantized = WeightFormats.QuantizeLinears(source);
        Assert.Equal(config.NumHiddenLayers * 7 + 1, quantized);   // q k v o gate up down per layer, and lm_head

        string path = Path.Combine(TempDir.Create("xrayvl-q8"), "model.safetensors");
        ModuleWeights.SaveModule(path, source);
        var header = SafeTensors.ReadHeader(path);
        var q = header.Tensors.Single(t => t.Name == "model.layers.0.self_attn.q_proj.weight");
        var s = header.Tensors.Single(t => t.Name == "model.layers.0.self_attn.q_proj.weight_scale");
        Assert.Equal(ScalarType.Int8, q.ScalarType);
        Assert.Equal([64, 64], q.Shape);
        Assert.Equal(ScalarType.Float32, s.ScalarType);
        Assert.Equal([64, 2], s.Shape);

        LanguageModel target;
        using (Layers.QuantizeLinearsOnCreation()) target = new LanguageModel(config);
        using var _ = target;
        ModuleWeights.LoadInto(target, SafeTensors.Load(path));
        var ids = torch.tensor(new long[] { 1, 5, 9, 33 }).view(1, 4);
        Assert.True(torch.allclose(source.Forward(source.Embed(ids)), target.Forward(target.Embed(ids)), rtol: 0, atol: 0));

        // An fp32 checkpoint does not load into a quantized model: its scales are missing.
        using var plain = TinyLanguageModels.Create(config, seed: 7);
        string plainPath = Path.Combine(TempDir.Create("xrayvl-fp32"), "model.safetensors");
        ModuleWeights.SaveModule(plainPath, plain);
        Assert.Throws<XrayVLException>(() => ModuleWeights.LoadInto(target, SafeTensors.Load(plainPath)));
    }
}
