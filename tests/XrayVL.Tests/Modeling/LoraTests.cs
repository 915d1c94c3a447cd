using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using XrayVL.IO;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public sealed class LoraTests : IDisposable
{
    private const int Hidden = 8;
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"xrayvl-lora-{Guid.NewGuid():N}");

    public LoraTests() => Directory.CreateDirectory(dir);

    public void Dispose()
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    // A small decoder-shaped tree: layers.{0,1}.self_attn.{q,v,o}_proj + layers.{i}.mlp, and a plain nn.Linear head.
    private sealed class Attention : nn.Module<Tensor, Tensor>
    {
        private readonly AdaptableLinear q_proj = new(Hidden, Hidden, hasBias: false);
        private readonly AdaptableLinear v_proj = new(Hidden, Hidden);
        private readonly AdaptableLinear o_proj = new(Hidden, Hidden);

        public Attention() : base(nameof(Attention)) => RegisterComponents();

        public override Tensor forward(Tensor x) => o_proj.forward(q_proj.forward(x).tanh().mul(v_proj.forward(x)));
    }

    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly Attention self_attn = new();
        private readonly AdaptableLinear mlp = new(Hidden, Hidden);

        public Block() : base(nameof(Block)) => RegisterComponents();

        public override Tensor forward(Tensor x)
        {
            var h = x.add(self_attn.forward(x));
            return h.add(mlp.forward(h).relu());
        }
    }

    private sealed class TinyModel : nn.Module<Tensor, Tensor>
    {
        private readonly ModuleList<Block> layers = nn.ModuleList(new Block(), new Block());
        private readonly Linear lm_head = nn.Linear(Hidden, 5);

        public TinyModel() : base(nameof(TinyModel)) => RegisterComponents();

        public override Tensor forward(Tensor x)
        {
            foreach (var layer in layers) x = layer.forward(x);
            return lm_head.forward(x);
        }
    }

    /// <summary>
    /// Weights drawn from a private generator (U(±1/√Hidden), as nn.Linear draws them): torch's global generator is
    /// shared with the tests running in parallel, and some tests here build the same model twice.
    /// </summary>
    private static TinyModel NewModel(int seed = 11)
    {
        var model = new TinyModel();
        using var generator = new torch.Generator((ulong)seed);
        double bound = 1 / Math.Sqrt(Hidden);
        using (torch.no_grad())
            foreach (var parameter in model.parameters()) parameter.uniform_(-bound, bound, generator);
        model.eval();
        return model;
    }

    private static LoraConfig QvConfig(int r = 4, double alpha = 8, double dropout = 0) => new()
    {
        R = r, LoraAlpha = alpha, LoraDropout = dropout, TargetModules = LoraTargetModules.Named("q_proj", "v_proj"),
        BaseModelNameOrPath = "tiny",
    };

    private static readonly string[] QvLayers =
    [
        "layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj", "layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj",
    ];

    private static void RandomiseB(nn.Module model, int seed = 3)
    {
        var generator = new torch.Generator(seed: (ulong)seed);
        using var _ = torch.no_grad();
        foreach (var (_, layer) in Lora.Layers(model))
            layer.LoraB!.copy_(torch.randn(layer.LoraB.shape, generator: generator).mul(0.5));
    }

    private static double MaxDifference(Tensor a, Tensor b) => a.sub(b).abs().max().item<float>();

    private static Tensor Input(int seed = 5) => torch.randn([3, 7, Hidden], generator: new torch.Generator(seed: (ulong)seed));

    // ---------------------------------------------------------------- the layer

    [Fact]
    public void AdaptableLinearHasLinearKeysAndMatchesTheFormula()
    {
        using var scope = torch.NewDisposeScope();
        var layer = new AdaptableLinear(6, 3);
        Assert.Equal(["bias", "weight"], layer.state_dict().Keys.Order());
        var x = torch.randn(4, 6);
        Assert.True(MaxDifference(layer.forward(x), x.matmul(layer.Weight.t()).add(layer.Bias!)) < 1e-6);

        var root = new Wrapper(layer);
        Lora.Inject(root, new LoraConfig { R = 2, LoraAlpha = 6, TargetModules = LoraTargetModules.Named("inner") });
        Assert.Equal(["inner.bias", "inner.lora_A.weight", "inner.lora_B.weight", "inner.weight"], root.state_dict().Keys.Order());
        Assert.Equal([2L, 6L], layer.LoraA!.shape);
        Assert.Equal([3L, 2L], layer.LoraB!.shape);
        Assert.Equal(0f, layer.LoraB.abs().sum().item<float>());
        // PEFT's A init: kaiming-uniform(a=√5) ⇒ |A| ≤ 1/√in.
        Assert.True(layer.LoraA.abs().max().item<float>() <= 1 / Math.Sqrt(6) + 1e-6);

        RandomiseB(root);
        // Naive reference: y = x Wᵀ + b + x Aᵀ Bᵀ · α/r with α/r = 3.
        var expected = x.matmul(layer.Weight.t()).add(layer.Bias!).add(x.matmul(layer.LoraA.t()).matmul(layer.LoraB.t()).mul(3.0));
        Assert.True(MaxDifference(layer.forward(x), expected) < 1e-5);
    }

    private sealed class Wrapper : nn.Module<Tensor, Tensor>
    {
        private readonly AdaptableLinear inner;

        public Wrapper(AdaptableLinear inner) : base(nameof(Wrapper))
        {
            this.inner = inner;
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => inner.forward(x);
    }

    // ---------------------------------------------------------------- injection

    [Fact]
    public void InjectTargetsExactlyTheNamedLayers()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var injected = Lora.Inject(model, QvConfig());

        Assert.Equal(QvLayers, injected.Order());
        Assert.Equal(QvLayers, Lora.Layers(model).Select(l => l.Name).Order());
        var loraKeys = model.state_dict().Keys.Where(k => k.Contains(".lora_")).Order();
        Assert.Equal(QvLayers.SelectMany(l => new[] { l + ".lora_A.weight", l + ".lora_B.weight" }).Order(), loraKeys);
    }

    [Fact]
    public void RegexAndAllLinearTargetsFollowPeft()
    {
        using var scope = torch.NewDisposeScope();
        var regex = new LoraConfig { TargetModules = LoraTargetModules.Matching(@"layers\.1\.self_attn\.(q|o)_proj") };
        Assert.Equal(["layers.1.self_attn.o_proj", "layers.1.self_attn.q_proj"], Lora.Inject(NewModel(), regex).Order());

        // A regex must match the whole path: "q_proj" alone matches nothing.
        var partial = new LoraConfig { TargetModules = LoraTargetModules.Matching("q_proj") };
        Assert.Throws<XrayVLException>(() => Lora.Inject(NewModel(), partial));

        // all-linear: every AdaptableLinear (8), not the plain lm_head.
        var all = Lora.Inject(NewModel(), new LoraConfig { TargetModules = LoraTargetModules.AllLinear });
        Assert.Equal(8, all.Count);
        Assert.DoesNotContain("lm_head", all);

        // A list name matches on a dotted suffix only: "proj" is not a suffix of "q_proj" after a dot.
        Assert.Throws<XrayVLException>(() => Lora.Inject(NewModel(), new LoraConfig { TargetModules = LoraTargetModules.Named("proj") }));
    }

    [Fact]
    public void TargetingALayerThatCannotCarryAnAdapterIsAnError()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var ex = Assert.Throws<XrayVLException>(() => Lora.Inject(model, new LoraConfig { TargetModules = LoraTargetModules.Named("q_proj", "lm_head") }));
        Assert.Contains("lm_head", ex.Message);
        Assert.Empty(Lora.Layers(model));   // nothing attached before the error

        Lora.Inject(model, QvConfig());
        Assert.Throws<XrayVLException>(() => Lora.Inject(model, QvConfig()));   // twice
    }

    [Fact]
    public void OnlyLoraParametersAreTrainable()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        Lora.Inject(model, QvConfig());
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Equal(2 * QvLayers.Length, trainable.Count);
        Assert.All(trainable, name => Assert.Matches(@"\.lora_[AB]\.weight$", name));
        Assert.Contains(model.named_parameters(), p => p.name == "lm_head.weight" && !p.parameter.requires_grad);
    }

    [Fact]
    public void FreshAdapterLeavesOutputUnchanged()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var x = Input();
        var before = model.forward(x);
        Lora.Inject(model, QvConfig());
        Assert.Equal(0.0, MaxDifference(model.forward(x), before));
    }

    // ---------------------------------------------------------------- merging

    [Fact]
    public void MergedWeightsGiveTheAdapterOutputAndUnmergeRestoresThem()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var x = Input();
        var baseOutput = model.forward(x);
        var originalWeights = model.state_dict().Where(kv => !kv.Key.Contains("lora_")).ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        Lora.Inject(model, QvConfig());
        RandomiseB(model);
        var adapted = model.forward(x);
        Assert.True(MaxDifference(adapted, baseOutput) > 1e-2, "random B should change the output");

        Lora.Merge(model);
        Assert.All(Lora.Layers(model), l => Assert.True(l.Layer.IsMerged));
        Assert.True(MaxDifference(model.forward(x), adapted) < 1e-5);
        Assert.True(MaxDifference(model.state_dict()["layers.0.self_attn.q_proj.weight"], originalWeights["layers.0.self_attn.q_proj.weight"]) > 1e-3);
        Lora.Merge(model);   // merging twice changes nothing
        Assert.True(MaxDifference(model.forward(x), adapted) < 1e-5);

        Lora.Unmerge(model);
        foreach (var (name, weight) in originalWeights)
            Assert.True(MaxDifference(model.state_dict()[name], weight) < 1e-6, name);
        Assert.True(MaxDifference(model.forward(x), adapted) < 1e-5);
    }

    [Fact]
    public void MergeAndUnloadLeavesAPlainModelWithTheAdaptedOutput()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var x = Input();
        var plainKeys = model.state_dict().Keys.Order().ToList();
        Lora.Inject(model, QvConfig());
        RandomiseB(model);
        var adapted = model.forward(x);

        Lora.MergeAndUnload(model);
        Assert.Empty(Lora.Layers(model));
        Assert.Equal(plainKeys, model.state_dict().Keys.Order());
        Assert.True(MaxDifference(model.forward(x), adapted) < 1e-5);
        Lora.Inject(model, QvConfig());   // a new adapter can be attached afterwards
    }

    [Fact]
    public void AdapterDropoutActsOnlyInTraining()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        Lora.Inject(model, QvConfig(dropout: 0.5));
        RandomiseB(model);
        var x = Input();
        var first = model.forward(x);
        Assert.Equal(0.0, MaxDifference(model.forward(x), first));   // eval: deterministic
        model.train();
        Assert.True(MaxDifference(model.forward(x), model.forward(x)) > 1e-4);
    }

    [Fact]
    public void HalfPrecisionBaseKeepsFloat32AdaptersAndMergesIntoTheBase()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        model.to(ScalarType.BFloat16);
        Lora.Inject(model, QvConfig());
        RandomiseB(model);
        var layer = Lora.Layers(model).First().Layer;
        Assert.Equal(ScalarType.Float32, layer.LoraA!.dtype);
        Assert.Equal(ScalarType.BFloat16, layer.Weight.dtype);

        var x = Input().to(ScalarType.BFloat16);
        var adapted = model.forward(x);
        Assert.Equal(ScalarType.BFloat16, adapted.dtype);
        Lora.Merge(model);
        Assert.Equal(ScalarType.BFloat16, layer.Weight.dtype);
        Assert.True(MaxDifference(model.forward(x).to(ScalarType.Float32), adapted.to(ScalarType.Float32)) < 0.1);   // bf16 rounding
    }

    // ---------------------------------------------------------------- PEFT folders

    [Fact]
    public void SavedAdapterReloadsIntoAFreshModelWithIdenticalOutputs()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        var config = QvConfig(r: 4, alpha: 16, dropout: 0.1);
        Lora.Inject(model, config);
        RandomiseB(model);
        var x = Input();
        var expected = model.forward(x);
        Lora.SaveAdapter(model, config, dir);

        var fresh = NewModel();   // same seed: same base weights
        var loaded = Lora.LoadAdapter(fresh, dir);
        Assert.Equal(0.0, MaxDifference(fresh.forward(x), expected));
        Assert.Equal(4, loaded.R);
        Assert.Equal(16, loaded.LoraAlpha);
        Assert.Equal(0.1, loaded.LoraDropout);
        Assert.Equal(["q_proj", "v_proj"], loaded.TargetModules!.Names!);
        Assert.Equal("tiny", loaded.BaseModelNameOrPath);
        Assert.Equal(2 * QvLayers.Length, fresh.parameters().Count(p => p.requires_grad));
    }

    [Fact]
    public void AdapterFolderUsesPeftNamesAndFields()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        Lora.Inject(model, QvConfig());
        Lora.SaveAdapter(model, QvConfig(), dir);

        Assert.Equal([Lora.ConfigFileName, Lora.WeightsFileName], Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        var header = SafeTensors.ReadHeader(Path.Combine(dir, Lora.WeightsFileName));
        var expectedKeys = QvLayers.SelectMany(l => new[] { $"base_model.model.{l}.lora_A.weight", $"base_model.model.{l}.lora_B.weight" });
        Assert.Equal(expectedKeys.Order(), header.Tensors.Select(t => t.Name).Order());
        Assert.Equal([4L, Hidden], header.Find("base_model.model.layers.0.self_attn.q_proj.lora_A.weight")!.Shape);
        Assert.Equal([(long)Hidden, 4L], header.Find("base_model.model.layers.0.self_attn.q_proj.lora_B.weight")!.Shape);
        Assert.Equal("pt", header.Metadata["format"]);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, Lora.ConfigFileName)));
        var root = json.RootElement;
        Assert.Equal("LORA", root.GetProperty("peft_type").GetString());
        Assert.Equal(4, root.GetProperty("r").GetInt32());
        Assert.Equal(8, root.GetProperty("lora_alpha").GetDouble());
        Assert.Equal(JsonValueKind.Array, root.GetProperty("target_modules").ValueKind);
        Assert.Equal("none", root.GetProperty("bias").GetString());
        Assert.False(root.GetProperty("fan_in_fan_out").GetBoolean());
        Assert.True(root.GetProperty("inference_mode").GetBoolean());
    }

    [Fact]
    public void ConfigAsPeftWritesItIsRead()
    {
        // Field set and layout of a PEFT 0.x adapter_config.json, written here by hand.
        const string peftJson = """
            {
              "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "lmsys/vicuna-7b-v1.5",
              "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
              "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 32, "lora_dropout": 0.05,
              "modules_to_save": null, "peft_type": "LORA", "r": 16, "rank_pattern": {}, "revision": null,
              "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false
            }
            """;
        File.WriteAllText(Path.Combine(dir, Lora.ConfigFileName), peftJson);
        var config = Lora.ReadConfig(dir);
        Assert.Equal(16, config.R);
        Assert.Equal(32, config.LoraAlpha);
        Assert.Equal(2.0, config.Scale);
        Assert.Equal(0.05, config.LoraDropout);
        Assert.Equal(["v_proj", "q_proj"], config.TargetModules!.Names!);
        Assert.Equal("CAUSAL_LM", config.TaskType);

        File.WriteAllText(Path.Combine(dir, Lora.ConfigFileName), """{"r": 8, "target_modules": ".*\\.(q|v)_proj", "use_rslora": true}""");
        var regex = Lora.ReadConfig(dir);
        Assert.Equal(@".*\.(q|v)_proj", regex.TargetModules!.Pattern);
        Assert.Equal(8 / Math.Sqrt(8), regex.Scale, 12);
        Assert.True(regex.TargetModules.Matches("model.layers.3.self_attn.v_proj"));
        Assert.False(regex.TargetModules.Matches("model.layers.3.self_attn.o_proj"));
        // And back out in the same form.
        Assert.Contains("\"target_modules\": \".*\\\\.(q|v)_proj\"", JsonSerializer.Serialize(regex, Json.Options));
    }

    public static TheoryData<string, string> InvalidConfigs => new()
    {
        { """{"r": 0, "target_modules": ["q_proj"]}""", "r must be positive" },
        { """{"r": 4, "lora_alpha": 0, "target_modules": ["q_proj"]}""", "lora_alpha" },
        { """{"r": 4, "lora_dropout": 1.0, "target_modules": ["q_proj"]}""", "lora_dropout" },
        { """{"r": 4}""", "target_modules" },
        { """{"r": 4, "target_modules": []}""", "target_modules" },
        { """{"r": 4, "target_modules": "(unclosed"}""", "regular expression" },
        { """{"r": 4, "target_modules": ["q_proj"], "bias": "all"}""", "bias" },
        { """{"r": 4, "target_modules": ["q_proj"], "peft_type": "IA3"}""", "peft_type" },
        { """{"r": 4, "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 8}}""", "rank_pattern" },
        { """{"r": 4, "target_modules": ["q_proj"], "use_dora": true}""", "use_dora" },
        { """{"r": 4, "target_modules": 7}""", "not a valid adapter config" },
        { """not json""", "not a valid adapter config" },
    };

    [Theory]
    [MemberData(nameof(InvalidConfigs))]
    public void InvalidConfigsAreRejectedNamingTheFile(string json, string fragment)
    {
        string path = Path.Combine(dir, Lora.ConfigFileName);
        File.WriteAllText(path, json);
        var ex = Assert.Throws<XrayVLException>(() => Lora.ReadConfig(dir));
        Assert.Contains(path, ex.Message);
        Assert.Contains(fragment, ex.Message);
    }

    [Fact]
    public void AdapterThatDoesNotFitIsRejectedBeforeTheModelIsTouched()
    {
        using var scope = torch.NewDisposeScope();
        var source = NewModel();
        Lora.Inject(source, QvConfig());
        Lora.SaveAdapter(source, QvConfig(), dir);
        string weights = Path.Combine(dir, Lora.WeightsFileName);
        var tensors = SafeTensors.Load(weights);

        // A missing key and an unexpected key.
        var edited = new Dictionary<string, Tensor>(tensors);
        edited.Remove("base_model.model.layers.1.self_attn.v_proj.lora_B.weight");
        edited["base_model.model.layers.1.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, Hidden);
        SafeTensors.Save(weights, edited);
        var target = NewModel();
        var ex = Assert.Throws<XrayVLException>(() => Lora.LoadAdapter(target, dir));
        Assert.Contains("layers.1.self_attn.v_proj.lora_B.weight", ex.Message);
        Assert.Contains("k_proj", ex.Message);
        Assert.Empty(Lora.Layers(target));

        // Rank in the config disagrees with the weights.
        SafeTensors.Save(weights, tensors);
        File.WriteAllText(Path.Combine(dir, Lora.ConfigFileName), JsonSerializer.Serialize(QvConfig(r: 2), Json.Options));
        ex = Assert.Throws<XrayVLException>(() => Lora.LoadAdapter(target, dir));
        Assert.Contains("base_model.model.layers.0.self_attn.q_proj.lora_A.weight: checkpoint (4, 8) vs model (2, 8)", ex.Message);
        Assert.Empty(Lora.Layers(target));

        // Missing weights file; missing config file.
        File.Delete(weights);
        ex = Assert.Throws<XrayVLException>(() => Lora.LoadAdapter(target, dir));
        Assert.Contains(Lora.WeightsFileName, ex.Message);
        ex = Assert.Throws<XrayVLException>(() => Lora.LoadAdapter(target, Path.Combine(dir, "nowhere")));
        Assert.Contains(Lora.ConfigFileName, ex.Message);
    }

    // ---------------------------------------------------------------- training

    [Fact]
    public void OneAdamWStepLowersTheLossAndChangesOnlyLoraTensors()
    {
        using var scope = torch.NewDisposeScope();
        var model = NewModel();
        Lora.Inject(model, QvConfig());
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var x = Input();
        var target = torch.randn([3, 7, 5], generator: new torch.Generator(seed: 9));

        var optimizer = torch.optim.AdamW(model.parameters().Where(p => p.requires_grad), lr: 1e-2);
        var loss = nn.functional.mse_loss(model.forward(x), target);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        float after;
        using (torch.no_grad())
            after = nn.functional.mse_loss(model.forward(x), target).item<float>();

        Assert.True(after < loss.item<float>(), $"loss {loss.item<float>()} → {after}");
        foreach (var (name, value) in model.state_dict())
        {
            bool changed = MaxDifference(value, before[name]) > 0;
            if (name.EndsWith(".lora_B.weight"))
                Assert.True(changed, name);
            else if (!name.Contains(".lora_A."))   // A has zero gradient while B = 0 (only weight decay moves it)
                Assert.False(changed, name);
        }
    }
}
