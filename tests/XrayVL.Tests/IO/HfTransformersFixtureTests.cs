using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

/// <summary>
/// Every folder of ../shared/reference/hf-transformers-4.40/models, loaded exactly as transformers 4.40's
/// `save_pretrained` wrote it, reproduces the outputs transformers computed (refs/): relative error ≤ 1e-4 in fp32 and
/// equal greedy tokens.
/// </summary>
public class HfTransformersFixtureTests
{
    private const double Tolerance = 1e-4;

    private static string Model(string name) => Path.Combine(ReferenceOutputs.Root, "hf-transformers-4.40", "models", name);
    private static ReferenceOutputs Refs(string name) => new(Path.Combine(ReferenceOutputs.Root, "hf-transformers-4.40", "refs", name));

    public static TheoryData<string> LanguageModels => ["llama_tied", "llama_untied_theta", "llama_ropescale", "qwen2_tied", "qwen2_untied"];

    private static Tensor Logits(LanguageModel model, Tensor ids, Tensor? mask = null)
    {
        using var noGrad = no_grad();
        return model.Forward(model.Embed(ids), mask);
    }

    /// <summary>Greedy decoding by full recomputation each step (the simplest reference), with left-padding masks.</summary>
    private static long[,] Greedy(Func<Tensor, Tensor, Tensor> logitsOf, Tensor prompt, Tensor mask, int steps)
    {
        using var scope = NewDisposeScope();
        var ids = prompt;
        for (int i = 0; i < steps; i++)
        {
            var next = logitsOf(ids, mask).select(1, -1).argmax(-1).unsqueeze(1);    // (B, 1)
            ids = cat([ids, next], 1);
            mask = cat([mask, ones_like(next)], 1);
        }
        var generated = ids.narrow(1, prompt.shape[1], steps);
        var result = new long[generated.shape[0], steps];
        for (int b = 0; b < result.GetLength(0); b++)
            for (int s = 0; s < steps; s++) result[b, s] = generated[b, s].item<long>();
        return result;
    }

    private static long[,] ToArray(Tensor t)
    {
        var result = new long[t.shape[0], t.shape[1]];
        for (int b = 0; b < result.GetLength(0); b++)
            for (int s = 0; s < result.GetLength(1); s++) result[b, s] = t[b, s].item<long>();
        return result;
    }

    [Theory]
    [MemberData(nameof(LanguageModels))]
    public void LanguageModelFolderReproducesTransformersLogitsAndGreedyTokens(string name)
    {
        using var model = Checkpoint.LoadLanguageModel(Model(name));
        var refs = Refs(name);
        using var scope = NewDisposeScope();

        Assert.True(ReferenceOutputs.RelativeError(Logits(model, refs.Tensor("ids_nopad")), refs.Tensor("logits_nopad")) <= Tolerance);

        // Left padding: real positions of each row match transformers', and the padded row equals the same row alone.
        var mask = refs.Tensor("mask_pad");
        var padded = Logits(model, refs.Tensor("ids_pad"), mask);
        var expectedPadded = refs.Tensor("logits_pad");
        var real = mask.to(ScalarType.Bool).unsqueeze(-1).expand_as(padded);
        Assert.True(ReferenceOutputs.RelativeError(padded.masked_select(real), expectedPadded.masked_select(real)) <= Tolerance);
        var alone = refs.Tensor("logits_row1_alone");
        long pads = mask.shape[1] - alone.shape[1];
        Assert.True(ReferenceOutputs.RelativeError(padded.select(0, 1).narrow(0, pads, alone.shape[1]).unsqueeze(0), alone) <= Tolerance);

        // Greedy: the same 20 tokens, and each step's logits equal transformers' scores.
        var prompt = refs.Tensor("gen_prompt");
        var tokens = Greedy((ids, m) => Logits(model, ids, m), prompt, ones_like(prompt), 20);
        Assert.Equal(ToArray(refs.Tensor("gen_tokens")), tokens);
        var generated = cat([prompt, refs.Tensor("gen_tokens")], 1);
        var stepLogits = Logits(model, generated).narrow(1, prompt.shape[1] - 1, 20);     // (1, 20, V)
        Assert.True(ReferenceOutputs.RelativeError(stepLogits, refs.Tensor("gen_scores")) <= Tolerance);

        var batchMask = refs.Tensor("bgen_mask");
        Assert.Equal(ToArray(refs.Tensor("bgen_tokens")), Greedy((ids, m) => Logits(model, ids, m), refs.Tensor("bgen_prompt"), batchMask, 20));
    }

    public static TheoryData<string, string> VisionTowers => new()
    {
        { "clip_quickgelu", "clip_quickgelu" },
        { "clip_gelu", "clip_gelu" },
        { "clipmodel_full", "clipmodel_full" },
        { "clipmodel_full_ch3", "clipmodel_full" },
        { "clipmodel_full_fullcfg", "clipmodel_full" },
    };

    [Theory]
    [MemberData(nameof(VisionTowers))]
    public void ClipFolderReproducesTransformersHiddenStates(string name, string refsName)
    {
        var refs = Refs(refsName);
        using var tower = (ClipVisionEncoder)Checkpoint.LoadVisionTower(Model(name));
        using var penultimate = (ClipVisionEncoder)Checkpoint.LoadVisionTower(Model(name), featureLayer: -2);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pixels = refs.Tensor("pixels");
        var states = tower.HiddenStates(pixels);
        Assert.Equal((int)refs.Scalar("num_hidden_states"), states.Length);
        Assert.True(ReferenceOutputs.RelativeError(states[^1], refs.Tensor("last_hidden")) <= Tolerance);
        Assert.True(ReferenceOutputs.RelativeError(states[^1], refs.Tensor("hidden_last")) <= Tolerance);
        Assert.True(ReferenceOutputs.RelativeError(states[^2], refs.Tensor("hidden_penultimate")) <= Tolerance);
        Assert.True(ReferenceOutputs.RelativeError(tower.Pooled(pixels), refs.Tensor("pooled")) <= Tolerance);
        Assert.True(ReferenceOutputs.RelativeError(penultimate.call(pixels), refs.Tensor("llava_features_l2_default")) <= Tolerance);
    }

    public static TheoryData<string> LlavaFolders => ["llava", "llava_newlayout", "llava_converted", "llava_minfix", "llava_minfix_act"];

    [Theory]
    [MemberData(nameof(LlavaFolders))]
    public void LlavaFolderReproducesTransformersImageEmbeddingsLogitsAndTokens(string name)
    {
        using var model = Checkpoint.LoadModel(Model(name));
        AssertMatchesLlavaRefs(model);
    }

    /// <summary>The refs of the llava fixture: one image token in the ids expands to the image's 16 positions.</summary>
    internal static void AssertMatchesLlavaRefs(VisionLanguageModel model)
    {
        var refs = Refs("llava");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var imageEmbeds = model.EncodeImages(refs.Tensor("pixels"));
        Assert.True(ReferenceOutputs.RelativeError(imageEmbeds, refs.Tensor("image_embeds")) <= Tolerance);

        Tensor Expand(Tensor ids)
        {
            var list = ids.data<long>().Select(i => (int)i).ToArray();
            var (expanded, _) = VisionLanguageModel.ExpandImagePlaceholders(list, list, model.Config.ImageTokenIndex, model.TokensPerImage);
            return tensor(expanded.Select(i => (long)i).ToArray()).unsqueeze(0);
        }
        var ids = Expand(refs.Tensor("ids"));
        Assert.True(ReferenceOutputs.RelativeError(model.Forward(ids, imageEmbeds), refs.Tensor("logits")) <= Tolerance);
        var tokens = Greedy((x, m) => model.Forward(x, imageEmbeds, m), ids, ones_like(ids), 20);
        Assert.Equal(ToArray(refs.Tensor("gen_tokens")), tokens);
    }

    [Theory]
    [InlineData("lora_llama")]
    [InlineData("lora_llama_rslora")]
    public void PeftAdapterOverItsBaseReproducesTransformersLogits(string name)
    {
        using var model = Checkpoint.LoadLanguageModel(Model("llama_untied_theta"));
        var config = Lora.LoadAdapter(model, Model(name));
        Assert.Equal(name.EndsWith("rslora"), config.UseRslora);
        var refs = Refs(name);
        using var scope = NewDisposeScope();
        Assert.True(ReferenceOutputs.RelativeError(Logits(model, refs.Tensor("ids")), refs.Tensor("logits_merged")) <= Tolerance);
        Lora.Merge(model);
        Assert.True(ReferenceOutputs.RelativeError(Logits(model, refs.Tensor("ids")), refs.Tensor("logits_merged")) <= Tolerance);
    }
}
