using System.Text.Json;
using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;
using static XrayVL.Tests.Support.TinyLanguageModels;

namespace XrayVL.Tests.Modeling;

public class LanguageModelTests
{
    private static string[] KeysAndShapes(LanguageModel model) =>
        model.state_dict().Select(kv => $"{kv.Key} [{string.Join(", ", kv.Value.shape)}]").Order(StringComparer.Ordinal).ToArray();

    private static string[] LayerKeys(int i, bool qkvBias) =>
    [
        $"model.layers.{i}.input_layernorm.weight [64]",
        $"model.layers.{i}.mlp.down_proj.weight [64, 128]",
        $"model.layers.{i}.mlp.gate_proj.weight [128, 64]",
        $"model.layers.{i}.mlp.up_proj.weight [128, 64]",
        $"model.layers.{i}.post_attention_layernorm.weight [64]",
        .. qkvBias ? new[] { $"model.layers.{i}.self_attn.k_proj.bias [32]" } : [],
        $"model.layers.{i}.self_attn.k_proj.weight [32, 64]",
        $"model.layers.{i}.self_attn.o_proj.weight [64, 64]",
        .. qkvBias ? new[] { $"model.layers.{i}.self_attn.q_proj.bias [64]" } : [],
        $"model.layers.{i}.self_attn.q_proj.weight [64, 64]",
        .. qkvBias ? new[] { $"model.layers.{i}.self_attn.v_proj.bias [32]" } : [],
        $"model.layers.{i}.self_attn.v_proj.weight [32, 64]",
    ];

    [Fact]
    public void LlamaStateDictHasHuggingFaceKeysAndShapes()
    {
        using var model = new LanguageModel(Config("llama", tied: false));
        string[] expected =
        [
            "lm_head.weight [100, 64]",
            "model.embed_tokens.weight [100, 64]",
            .. LayerKeys(0, qkvBias: false),
            .. LayerKeys(1, qkvBias: false),
            "model.norm.weight [64]",
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), KeysAndShapes(model));
        // Spelled out once, so that a change in the helper above cannot hide a renamed key.
        Assert.Contains("model.layers.1.self_attn.q_proj.weight [64, 64]", KeysAndShapes(model));
        Assert.Equal(21, KeysAndShapes(model).Length);
    }

    [Fact]
    public void Qwen2StateDictHasQkvBiasesAndNoLmHeadWhenTied()
    {
        using var model = new LanguageModel(Config("qwen2", tied: true));
        string[] expected =
        [
            "model.embed_tokens.weight [100, 64]",
            .. LayerKeys(0, qkvBias: true),
            .. LayerKeys(1, qkvBias: true),
            "model.norm.weight [64]",
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), KeysAndShapes(model));
        Assert.Contains("model.layers.0.self_attn.q_proj.bias [64]", KeysAndShapes(model));
        Assert.DoesNotContain(KeysAndShapes(model), k => k.Contains("o_proj.bias") || k.StartsWith("lm_head"));
    }

    [Fact]
    public void TiedOutputProjectionUsesTheEmbeddingMatrix()
    {
        using var model = Create(Config(tied: true), seed: 1);
        using var scope = NewDisposeScope();
        var hidden = torch.randn([1, 3, 64], generator: new torch.Generator(2));
        var expected = hidden.matmul(model.state_dict()["model.embed_tokens.weight"].t());
        Assert.True(MaxAbsDiff(model.Logits(hidden), expected) < 1e-5);
    }

    [Fact]
    public void LoraAdaptersAttachToTheAttentionProjectionsUnderHuggingFaceNames()
    {
        using var model = Create(Config("qwen2"), seed: 36);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var embeds = model.Embed(Ids(RandomIds(6, 100, seed: 37)));
        var before = model.Forward(embeds);
        var adapted = Lora.Inject(model, new LoraConfig { R = 4, TargetModules = LoraTargetModules.Named("q_proj", "v_proj") });
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                      "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"], adapted);
        Assert.Contains("model.layers.1.self_attn.v_proj.lora_B.weight", model.state_dict().Keys);
        Assert.True(MaxAbsDiff(model.Forward(embeds), before) < 1e-6);                          // B = 0: unchanged
    }

    [Fact]
    public void InitialisationFollowsHuggingFace()
    {
        using var model = new LanguageModel(Config("qwen2") with { HiddenSize = 256, IntermediateSize = 512, InitializerRange = 0.02 });
        var weights = model.state_dict();
        Assert.Equal(0.02, weights["model.layers.0.mlp.up_proj.weight"].std().item<float>(), 0.002);
        Assert.Equal(0.0, weights["model.layers.0.self_attn.q_proj.bias"].abs().max().item<float>());
        Assert.Equal(1.0, weights["model.layers.1.input_layernorm.weight"].min().item<float>());
        Assert.Equal(1.0, weights["model.norm.weight"].max().item<float>());
    }

    [Fact]
    public void CachedDecodingMatchesFullRecompute()
    {
        using var model = Create(Config("qwen2"), seed: 3);
        using var noGrad = torch.no_grad();
        var sequence = RandomIds(5, 100, seed: 4).ToList();
        using var cache = model.NewCache(1, 64);
        Tensor next = Ids(sequence);
        double worst = 0;
        for (int step = 0; step < 30; step++)
        {
            using var scope = NewDisposeScope();
            var cached = model.Forward(model.Embed(next), null, cache)[0, -1];                      // (V)
            var full = model.Forward(model.Embed(Ids(sequence)))[0, -1];                          // (V)
            worst = Math.Max(worst, MaxAbsDiff(cached, full));
            long token = cached.argmax().item<long>();
            Assert.Equal(full.argmax().item<long>(), token);
            sequence.Add(token);
            next = Ids([token]).MoveToOuterDisposeScope();
        }
        Assert.True(worst < 1e-4, $"max |cached − full| = {worst}");
        Assert.Equal(34, cache.Length);                                                   // 5 prompt + 29 fed back
        Assert.True(sequence.Skip(5).Distinct().Count() > 1, "the check should cover more than one repeated token");
    }

    [Fact]
    public void PrefillInChunksEqualsOnePrefill()
    {
        using var model = Create(Config("llama", tied: false), seed: 5);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var embeds = model.Embed(Ids(RandomIds(12, 100, seed: 6)));
        var whole = model.Forward(embeds);                                                       // (1, 12, V)
        using var cache = model.NewCache(1, 12);
        var chunks = new[] { (0, 5), (5, 4), (9, 3) }
            .Select(c => model.Forward(embeds.narrow(1, c.Item1, c.Item2), torch.ones(1, c.Item1 + c.Item2), cache)).ToArray();
        Assert.True(MaxAbsDiff(torch.cat(chunks, 1), whole) < 1e-4);
        Assert.Throws<XrayVLBugException>(() => model.Forward(embeds.narrow(1, 0, 1), null, cache)); // full: 12 of 12
    }

    [Fact]
    public void LeftPaddedBatchMatchesEachRowAlone()
    {
        using var model = Create(Config("qwen2"), seed: 7);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var longRow = model.Embed(Ids(RandomIds(7, 100, seed: 8)));                              // (1, 7, D)
        var shortRow = model.Embed(Ids(RandomIds(4, 100, seed: 9)));                             // (1, 4, D)
        // The padding holds garbage on purpose: nothing of it may leak into real positions.
        var padding = torch.randn([1, 3, 64], generator: new torch.Generator(10)) * 5;
        var batch = torch.cat([longRow, torch.cat([padding, shortRow], 1)], 0);                  // (2, 7, D)
        var mask = torch.tensor(new long[,] { { 1, 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 1, 1, 1, 1 } });

        using var cache = model.NewCache(2, 10);
        var batched = model.Forward(batch, mask, cache);                                         // (2, 7, V)
        using var longCache = model.NewCache(1, 10);
        using var shortCache = model.NewCache(1, 10);
        Assert.True(MaxAbsDiff(batched[0], model.Forward(longRow, null, longCache)[0]) < 1e-4);
        Assert.True(MaxAbsDiff(batched[1, 3..], model.Forward(shortRow, null, shortCache)[0]) < 1e-4);

        // Decoding on: the padded row keeps matching its unpadded self.
        for (int step = 0; step < 3; step++)
        {
            var tokens = torch.tensor(new long[] { 11 + step, 40 + step }).view(2, 1);
            mask = torch.cat([mask, torch.ones(2, 1, ScalarType.Int64)], 1);
            var stepLogits = model.Forward(model.Embed(tokens), mask, cache);                    // (2, 1, V)
            Assert.True(MaxAbsDiff(stepLogits[0], model.Forward(model.Embed(tokens[0..1]), null, longCache)[0]) < 1e-4);
            Assert.True(MaxAbsDiff(stepLogits[1], model.Forward(model.Embed(tokens[1..2]), null, shortCache)[0]) < 1e-4);
        }
    }

    [Fact]
    public void RotaryEmbeddingMatchesTheFormulaByHand()
    {
        using var scope = NewDisposeScope();
        var x = torch.tensor(new float[] { 1, 2, 3, 4 }).view(1, 1, 1, 4);                       // (B, h, T, hd = 4)
        var (cos, sin) = RotaryEmbedding.CosSin(torch.tensor(new long[] { 1 }).view(1, 1), 4, 10000, ScalarType.Float32);
        var rotated = RotaryEmbedding.Apply(x, cos, sin).view(4).data<float>().ToArray();
        // Frequencies 10000^(−0/4) = 1 and 10000^(−2/4) = 0.01; pairs (x0, x2) and (x1, x3) rotate by position · frequency.
        double a = 1.0, b = 0.01;
        double[] expected =
        [
            1 * Math.Cos(a) - 3 * Math.Sin(a),
            2 * Math.Cos(b) - 4 * Math.Sin(b),
            3 * Math.Cos(a) + 1 * Math.Sin(a),
            4 * Math.Cos(b) + 2 * Math.Sin(b),
        ];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], rotated[i], 1e-5);
    }

    [Fact]
    public void RotaryScoresDependOnlyOnThePositionDifference()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(11);
        var q = torch.randn([1, 1, 1, 16], generator: generator);
        var k = torch.randn([1, 1, 1, 16], generator: generator);
        double Score(long queryPosition, long keyPosition)
        {
            var (cq, sq) = RotaryEmbedding.CosSin(torch.tensor(new[] { queryPosition }).view(1, 1), 16, 10000, ScalarType.Float32);
            var (ck, sk) = RotaryEmbedding.CosSin(torch.tensor(new[] { keyPosition }).view(1, 1), 16, 10000, ScalarType.Float32);
            return (RotaryEmbedding.Apply(q, cq, sq) * RotaryEmbedding.Apply(k, ck, sk)).sum().item<float>();
        }
        double reference = Score(5, 2);
        Assert.Equal(reference, Score(13, 10), 1e-4);
        Assert.Equal(reference, Score(103, 100), 1e-4);
        Assert.NotEqual(reference, Score(6, 2), 1e-3);                                          // another distance differs
        Assert.Equal((q * k).sum().item<float>(), Score(7, 7), 1e-4);                           // distance 0: plain dot product
    }

    [Fact]
    public void RmsNormMatchesANaiveComputation()
    {
        using var scope = NewDisposeScope();
        using var norm = new RmsNorm(8, 1e-6);
        var generator = new torch.Generator(12);
        using (torch.no_grad()) norm.parameters().Single().copy_(torch.randn([8], generator: generator));
        var x = torch.randn([2, 3, 8], generator: generator) * 3;
        var y = norm.call(x).data<float>().ToArray();
        var xs = x.data<float>().ToArray();
        var w = norm.parameters().Single().data<float>().ToArray();
        for (int row = 0; row < 6; row++)
        {
            double meanSquare = Enumerable.Range(0, 8).Average(j => (double)xs[row * 8 + j] * xs[row * 8 + j]);
            for (int j = 0; j < 8; j++)
                Assert.Equal(xs[row * 8 + j] / Math.Sqrt(meanSquare + 1e-6) * w[j], y[row * 8 + j], 1e-5);
        }
    }

    [Fact]
    public void AttentionMatchesANaiveSoftmaxWithGroupedHeads()
    {
        // One layer whose MLP is switched off: logits depend on the attention only; check it against a hand-written
        // softmax(QKᵀ/√d + causal)·V with each key/value head shared by two query heads.
        using var model = Create(Config("qwen2") with { NumHiddenLayers = 1 }, seed: 13);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var w = model.state_dict();
        w["model.layers.0.mlp.down_proj.weight"].zero_();
        var x = model.Embed(Ids(RandomIds(6, 100, seed: 14)));                                   // (1, 6, 64)

        Tensor Norm(Tensor t, Tensor weight) => t * torch.rsqrt(t.pow(2).mean([-1], keepdim: true) + 1e-6) * weight;
        var h = Norm(x, w["model.layers.0.input_layernorm.weight"]);
        Tensor Project(string name) =>
            torch.nn.functional.linear(h, w[$"model.layers.0.self_attn.{name}.weight"], w[$"model.layers.0.self_attn.{name}.bias"]);
        var q = Project("q_proj").view(1, 6, 4, 16).transpose(1, 2);                           // (1, 4, 6, 16)
        var k = Project("k_proj").view(1, 6, 2, 16).transpose(1, 2);                           // (1, 2, 6, 16)
        var v = Project("v_proj").view(1, 6, 2, 16).transpose(1, 2);
        var (cos, sin) = RotaryEmbedding.CosSin(torch.arange(6).view(1, 6), 16, 10000, ScalarType.Float32);
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin).repeat_interleave(2, dim: 1);                    // (1, 4, 6, 16)
        v = v.repeat_interleave(2, dim: 1);
        var scores = q.matmul(k.transpose(-1, -2)) / 4.0;                                        // (1, 4, 6, 6)
        scores = scores.masked_fill(torch.ones(6, 6).triu(1).to(ScalarType.Bool), double.NegativeInfinity);
        var attended = scores.softmax(-1).matmul(v).transpose(1, 2).reshape(1, 6, 64);
        var residual = x + torch.nn.functional.linear(attended, w["model.layers.0.self_attn.o_proj.weight"]);
        var expected = Norm(residual, w["model.norm.weight"]).matmul(w["model.embed_tokens.weight"].t());
        Assert.True(MaxAbsDiff(model.Forward(x), expected) < 1e-4);
    }

    [Fact]
    public void ChangingAFutureTokenLeavesEarlierLogitsUnchanged()
    {
        using var model = Create(Config(), seed: 15);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var ids = RandomIds(10, 100, seed: 16);
        var changed = ids.ToArray();
        changed[6] = (ids[6] + 1) % 100;
        var a = model.Forward(model.Embed(Ids(ids)));
        var b = model.Forward(model.Embed(Ids(changed)));
        Assert.True(MaxAbsDiff(a[.., ..6], b[.., ..6]) < 1e-6);
        Assert.True(MaxAbsDiff(a[.., 6..], b[.., 6..]) > 1e-3);
    }

    [Fact]
    public void LossMatchesTheDefinitionAndIgnoresMaskedLabels()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(17);
        var logits = torch.randn([2, 5, 7], generator: generator);
        var labels = torch.tensor(new long[,] { { -100, -100, 3, 1, 6 }, { -100, 2, 0, -100, -100 } });
        double loss = LanguageModel.CausalLmLoss(logits, labels).item<float>();

        // By hand: logits at t predict labels at t + 1; five counted targets.
        var logProbs = logits.log_softmax(-1);
        var counted = new (int Row, int T, int Label)[] { (0, 1, 3), (0, 2, 1), (0, 3, 6), (1, 0, 2), (1, 1, 0) };
        double expected = -counted.Average(c => logProbs[c.Row, c.T, c.Label].item<float>());
        Assert.Equal(expected, loss, 1e-5);

        // Logits whose next label is ignored (and the last position, which predicts nothing) do not count.
        var edited = logits.clone();
        edited[0, 0] = torch.randn([7], generator: generator) * 10;
        edited[1, 2] = torch.randn([7], generator: generator) * 10;
        edited[1, 4] = torch.randn([7], generator: generator) * 10;
        edited[0, 4] = torch.randn([7], generator: generator) * 10;
        Assert.Equal(loss, LanguageModel.CausalLmLoss(edited, labels).item<float>(), 1e-6);
        edited[0, 1] = torch.randn([7], generator: generator) * 10;                              // a counted one
        Assert.NotEqual(loss, LanguageModel.CausalLmLoss(edited, labels).item<float>(), 1e-3);

        // Nothing to count: zero, not NaN.
        Assert.Equal(0.0, LanguageModel.CausalLmLoss(logits, torch.full([2, 5], -100L)).item<float>());
        Assert.Throws<XrayVLBugException>(() => LanguageModel.CausalLmLoss(logits, labels[.., ..4]));
    }

    [Fact]
    public void AdamWMemorisesAShortSequence()
    {
        using var model = Create(Config("qwen2") with { InitializerRange = 0.02 }, seed: 18);
        model.train();
        var ids = Ids(RandomIds(16, 100, seed: 19));
        var labels = ids.clone();
        labels[0, ..4] = torch.tensor(Constants.IgnoreIndex);                                   // a masked "prompt"
        using var optimizer = torch.optim.AdamW(model.parameters(), lr: 1e-2);
        double first = 0, last = 0;
        for (int step = 0; step < 100; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = LanguageModel.CausalLmLoss(model.Forward(model.Embed(ids)), labels);
            loss.backward();
            optimizer.step();
            last = loss.item<float>();
            if (step == 0) first = last;
        }
        Assert.True(first > 4.0, $"initial loss {first} should be near ln(100)");
        Assert.True(last < 0.02, $"final loss {last}");                                // measured ≈ 0.001
    }

    [Fact]
    public void Bfloat16ForwardStaysCloseToFloat32()
    {
        using var model = Create(Config("qwen2") with { InitializerRange = 0.02 }, seed: 20);
        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();
        var ids = Ids(RandomIds(24, 100, seed: 21));
        var fp32 = model.Forward(model.Embed(ids));
        model.to(ScalarType.BFloat16);
        var bf16 = model.Forward(model.Embed(ids));
        Assert.Equal(ScalarType.Float32, bf16.dtype);                                           // logits come back in float32
        Assert.Equal(ScalarType.BFloat16, model.DType);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));       // norms and embeddings too
        Assert.Equal(ScalarType.BFloat16, model.ForwardHidden(model.Embed(ids)).dtype);        // no silent promotion to fp32
        double relative = ((bf16 - fp32).norm() / fp32.norm()).item<float>();
        Assert.True(relative < 2e-2, $"relative error {relative}");                             // measured 0.0052
        // The cache follows the model's dtype, and a cached bf16 step matches the bf16 full pass.
        using var cache = model.NewCache(1, 24);
        var cached = model.Forward(model.Embed(ids), null, cache);
        Assert.True(MaxAbsDiff(cached, bf16) < 1e-3);
    }

    [Fact]
    public void BadInputsAreRefusedClearly()
    {
        using var model = Create(Config(), seed: 22);
        using var scope = NewDisposeScope();
        var e = Assert.Throws<XrayVLBugException>(() => model.Forward(torch.zeros(1, 3, 32)));
        Assert.Contains("(batch, length, 64)", e.Message);
        Assert.Throws<XrayVLBugException>(() => model.Forward(torch.zeros(1, 3, 64), torch.ones(1, 4)));
        using var cache = model.NewCache(2, 8);
        Assert.Throws<XrayVLBugException>(() => model.Forward(torch.zeros(1, 3, 64), null, cache));
        var outside = Assert.Throws<XrayVLException>(() => model.Embed(torch.tensor(new long[] { 3, 100 }).view(1, 2)));
        Assert.Contains("token id 100", outside.Message);
        Assert.Throws<XrayVLException>(() => model.Embed(torch.tensor(new long[] { -1 }).view(1, 1)));
    }

    // Published configs (the fields of their config.json files on the Hugging Face hub).
    internal const string Qwen2HalfBillion = """
        {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
         "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
         "max_position_embeddings": 131072, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
         "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
         "sliding_window": 131072, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
         "use_sliding_window": false, "vocab_size": 151936}
        """;
    internal const string TinyLlama = """
        {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
         "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
         "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
         "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
         "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32000}
        """;

    internal static LanguageModelConfig Parse(string json) => JsonSerializer.Deserialize<LanguageModelConfig>(json, Json.Options)!.Validate();

    [Fact]
    public void ParameterFormulaGivesThePublishedCounts()
    {
        Assert.Equal(494_032_768, LanguageModel.CountParameters(Parse(Qwen2HalfBillion)));
        Assert.Equal(1_100_048_384, LanguageModel.CountParameters(Parse(TinyLlama)));
        Assert.Equal(20_773_376, LanguageModel.CountParameters(XrayVL.Benchmarks.DecodeBenchmark.DefaultConfig));
    }

    [Theory]
    [InlineData("llama", true, false, false, null)]
    [InlineData("llama", false, true, true, null)]
    [InlineData("qwen2", true, false, true, 24)]
    [InlineData("qwen2", false, false, false, null)]
    public void ParameterFormulaMatchesInstantiatedModels(string type, bool tied, bool attentionBias, bool mlpBias, int? headDim)
    {
        var config = Config(type, tied) with { AttentionBias = attentionBias, MlpBias = mlpBias, HeadDim = headDim };
        using var model = new LanguageModel(config);
        Assert.Equal(model.parameters().Sum(p => p.numel()), LanguageModel.CountParameters(config));
    }
}

/// <summary>
/// Tests that change TorchSharp's process-wide state (the default device, the thread count) run alone, after the
/// parallel tests: a tensor created meanwhile elsewhere would land on META.
/// </summary>
[CollectionDefinition(nameof(ProcessWideTorchState), DisableParallelization = true)]
public sealed class ProcessWideTorchState
{
    /// <summary>Runs <paramref name="body"/> with META as the default device: modules get shapes but no memory.</summary>
    public static void OnMetaDevice(Action body)
    {
        torch.set_default_device(new Device(DeviceType.META));
        try { body(); }
        finally { torch.set_default_device(torch.CPU); }
    }
}

[Collection(nameof(ProcessWideTorchState))]
public class MetaDeviceLanguageModelTests
{
    [Fact]
    public void ParameterFormulaMatchesPublishedModelsBuiltOnTheMetaDevice() => ProcessWideTorchState.OnMetaDevice(() =>
    {
        foreach (var (json, published) in new[] { (LanguageModelTests.Qwen2HalfBillion, 494_032_768L), (LanguageModelTests.TinyLlama, 1_100_048_384L) })
        {
            var config = LanguageModelTests.Parse(json);
            using var model = new LanguageModel(config);
            Assert.Equal(DeviceType.META, model.Device.type);
            Assert.Equal(published, model.parameters().Sum(p => p.numel()));
            Assert.Equal(published, LanguageModel.CountParameters(config));
        }
    });
}
