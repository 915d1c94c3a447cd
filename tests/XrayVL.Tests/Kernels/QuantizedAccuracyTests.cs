using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Kernels;

/// <summary>
/// bf16 and int8 (Q8_0) inference against the fp32 logits Hugging Face transformers 4.40 recorded for the tiny LLaMA and
/// Qwen2 fixtures in ../shared/reference (weights O(1), so errors show): the full-sequence logits (prefill path) and
/// token-by-token decoding with the KV cache (the decode kernels), fed HF's own greedy tokens so every step is compared
/// with HF's score for that step; the greedy choice must agree at every step.
/// </summary>
[Collection(nameof(ProcessWideTorchState))]   // loading in bf16/int8/int4 sets torch's process-wide default dtype while the model is built
public class QuantizedAccuracyTests(ITestOutputHelper output)
{
    private static readonly Lazy<string?> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "reference", "hf-transformers-4.40");
            if (File.Exists(Path.Combine(candidate, "README.md"))) return candidate;
        }
        return null;
    });

    private static string Fixture(params string[] parts) =>
        Path.Combine([Root.Value ?? throw new DirectoryNotFoundException("../shared/reference/hf-transformers-4.40 not found above the test binaries"), .. parts]);

    /// <summary>A recorded output as a tensor: refs/NAME/manifest.json gives shape and dtype, NAME.bin the raw bytes.</summary>
    private static Tensor Recorded(string model, string output)
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Fixture("refs", model, "manifest.json")));
        var entry = manifest.RootElement.GetProperty(output);
        long[] shape = entry.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        byte[] bytes = File.ReadAllBytes(Fixture("refs", model, output + ".bin"));
        return entry.GetProperty("dtype").GetString() switch
        {
            "f32" => torch.tensor(MemoryMarshal.Cast<byte, float>(bytes).ToArray()).view(shape),
            "i64" => torch.tensor(MemoryMarshal.Cast<byte, long>(bytes).ToArray()).view(shape),
            var other => throw new InvalidDataException($"unexpected dtype {other}"),
        };
    }

    private static double RelativeError(Tensor actual, Tensor expected) =>
        (actual.to(ScalarType.Float32) - expected).norm().item<float>() / expected.norm().item<float>();

    /// <summary>
    /// The fixture as `--dtype` loads it (streamed straight into the format); with <paramref name="fp32Activations"/>, the
    /// fp32 model with only its linear weights quantized.
    /// </summary>
    private static LanguageModel Load(string model, WeightFormat format, bool fp32Activations = false)
    {
        if (!fp32Activations) return ModelLoading.LoadLanguageModel(Fixture("models", model), format);
        var lm = Checkpoint.LoadLanguageModel(Fixture("models", model));
        foreach (var p in lm.parameters()) p.requires_grad = false;
        WeightFormats.QuantizeLinears(lm, format.LinearQuantization());   // weight quantization alone
        return lm;
    }

    /// <summary>Logits of HF's greedy steps, decoded one token at a time with the cache: (1, steps, V).</summary>
    private static Tensor DecodeSteps(LanguageModel lm, Tensor prompt, Tensor tokens)
    {
        int steps = (int)tokens.shape[1];
        using var cache = lm.NewCache(1, (int)prompt.shape[1] + steps);
        var logits = new List<Tensor> { lm.Forward(lm.Embed(prompt), null, cache, logitsForLastOnly: true) };   // (1, 1, V)
        for (int i = 0; i < steps - 1; i++)
            logits.Add(lm.Forward(lm.Embed(tokens.narrow(1, i, 1)), null, cache));                                // (1, 1, V)
        return torch.cat(logits, dim: 1);
    }

    private const double Int4Bound = 0.2;

    [Theory]
    [InlineData("llama_tied")]
    [InlineData("llama_untied_theta")]
    [InlineData("qwen2_tied")]
    [InlineData("qwen2_untied")]
    public void Int8_and_bf16_logits_stay_near_fp32_and_greedy_decoding_agrees(string model)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var ids = Recorded(model, "ids_nopad");
        var expected = Recorded(model, "logits_nopad");
        var prompt = Recorded(model, "gen_prompt");
        var tokens = Recorded(model, "gen_tokens");
        var scores = Recorded(model, "gen_scores");

        using var fp32 = Load(model, WeightFormat.Fp32);
        double fp32Error = RelativeError(fp32.Forward(fp32.Embed(ids)), expected);
        Assert.True(fp32Error < 1e-5, $"fp32 does not reproduce the fixture ({fp32Error:E2}): the comparison below would mean nothing");

        // int4 has 16 levels per group against int8's 255: its bound is looser (measured figures in the README).
        foreach (var (name, lm, bound) in new[]
        {
            ("int8 weights, fp32 activations", Load(model, WeightFormat.Int8, fp32Activations: true), 2e-2),
            ("int8 (bf16 + Q8_0 linears)", Load(model, WeightFormat.Int8), 2e-2),
            ("bf16", Load(model, WeightFormat.Bf16), 2e-2),
            ("int4 weights, fp32 activations", Load(model, WeightFormat.Int4, fp32Activations: true), Int4Bound),
            ("int4 (bf16 + Q4_0 linears)", Load(model, WeightFormat.Int4), Int4Bound),
        })
        {
            using var _ = lm;
            double prefillError = RelativeError(lm.Forward(lm.Embed(ids)), expected);
            var stepLogits = DecodeSteps(lm, prompt, tokens);
            double decodeError = RelativeError(stepLogits, scores);
            var agrees = stepLogits.argmax(-1).eq(tokens).squeeze(0);                                  // (steps)
            // A step is decided when HF's top-1 leads its runner-up by more than twice this model's largest logit error
            // there: a lossy format may swap a near-tie (the untied fixtures have margins down to 0.008) but never these.
            var top2 = scores.squeeze(0).topk(2, dim: -1).values;                                          // (steps, 2)
            var margin = top2.select(-1, 0) - top2.select(-1, 1);
            var stepError = (stepLogits.squeeze(0) - scores.squeeze(0)).abs().amax([-1]);
            var decided = margin.gt(stepError * 2);
            long agree = agrees.sum().item<long>(), decidedCount = decided.sum().item<long>();
            long decidedAgree = agrees.logical_and(decided).sum().item<long>();
            output.WriteLine($"{model}, {name}: logits relative error {prefillError:E2} (prefill), {decodeError:E2} (decode); " +
                $"greedy agrees at {agree}/{tokens.shape[1]} steps, {decidedAgree}/{decidedCount} of the decided ones");
            Assert.True(prefillError <= bound, $"{name}: prefill logits relative error {prefillError:E2} > {bound:E0}");
            Assert.True(decodeError <= bound, $"{name}: decode logits relative error {decodeError:E2} > {bound:E0}");
            Assert.Equal(decidedCount, decidedAgree);
            // int4's error is large enough on these O(1) weights that few steps are decided; those few must still agree.
            if (bound < Int4Bound)
                Assert.True(decidedCount >= tokens.shape[1] / 2, $"{name}: only {decidedCount} steps decided: the error is too large to judge greedy choices");
        }
    }
}
