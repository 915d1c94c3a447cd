using System.IO.Compression;
using System.Text;
using System.Text.Json;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

/// <summary>
/// The PyTorch checkpoint reader against files torch 1.13 wrote (../shared/reference/seeds/torch_format with expected.json
/// and .npy values) and the seeds' real checkpoint files, plus refusals of code-naming pickles and broken archives.
/// </summary>
public sealed class TorchCheckpointTests
{
    private static string Reference(params string[] parts) => Path.Combine([SharedData.Root, "..", "reference", .. parts]);

    private static string TorchFormat(string name) => Reference("seeds", "torch_format", name);

    private static readonly Lazy<JsonElement> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllText(TorchFormat("expected.json"))).RootElement);

    public static TheoryData<string> FormatFiles =>
        ["dtypes.pt", "views.pt", "shared_storage.pt", "nested.pt", "legacy_format.pt", "empty.pt", "bare_tensor.pt", "bare_list.pt"];

    [Fact]
    public void EveryFormatFixtureIsCovered()
    {
        var onDisk = Directory.GetFiles(TorchFormat(""), "*.pt").Select(Path.GetFileName).Order().ToList();
        Assert.Equal(FormatFiles.Select(row => (string)row.Data).Order(), onDisk!);
        Assert.Equal(onDisk!, Expected.Value.EnumerateObject().Select(p => p.Name).Where(n => n != "_about").Order());
    }

    // ---------------------------------------------------------------- torch_format: every entry of expected.json

    [Theory]
    [MemberData(nameof(FormatFiles))]
    public void FormatFixtureMatchesExpectedEntries(string file)
    {
        using var scope = torch.NewDisposeScope();
        var expected = Expected.Value.GetProperty(file);
        using var checkpoint = TorchCheckpoint.Open(TorchFormat(file));
        Assert.Equal(expected.GetProperty("format").GetString()!.StartsWith("legacy") ? "legacy" : "zip", checkpoint.Format);

        var infos = Flatten(checkpoint.Root, ExpectedPaths);
        var values = Flatten(checkpoint.Materialize(), ExpectedPaths);
        var entries = expected.GetProperty("entries");
        Assert.Equal(entries.EnumerateObject().Select(p => p.Name), infos.Keys);

        foreach (var entry in entries.EnumerateObject())
        {
            string path = entry.Name;
            var want = entry.Value;
            string kind = want.GetProperty("kind").GetString()!;
            Assert.True(kind == TorchPickle.KindOf(infos[path]), $"{file} {path}: {TorchPickle.KindOf(infos[path])} instead of {kind}");
            switch (infos[path])
            {
                case TorchTensorInfo info:
                    var tensor = (Tensor)values[path]!;
                    Assert.Equal(want.GetProperty("dtype").GetString(), DTypeName(tensor.dtype));
                    Assert.Equal(Longs(want.GetProperty("shape")), tensor.shape);
                    Assert.Equal(Longs(want.GetProperty("stride")), tensor.stride());
                    Assert.Equal(want.GetProperty("storage_offset").GetInt64(), tensor.storage_offset());
                    Assert.Equal(want.GetProperty("storage_numel").GetInt64(), info.Storage.ElementCount);
                    AssertValuesEqualNpy(file, path, want, tensor);
                    break;
                case PickleDict dict:
                    Assert.Equal(want.GetProperty("keys").EnumerateArray().Select(k => k.ToString()), dict.Keys.Select(k => k.ToString()!));
                    break;
                case List<object?> list:
                    Assert.Equal(want.GetProperty("len").GetInt32(), list.Count);
                    break;
                case object?[] tuple:
                    Assert.Equal(want.GetProperty("len").GetInt32(), tuple.Length);
                    break;
                case var scalar:
                    AssertScalar($"{file} {path}", want.GetProperty("value"), scalar);
                    break;
            }
        }

        // Equal storage names ⇔ the same storage record. (Empty storages all carry one name in expected.json, an artifact
        // of comparing data pointers, which are all null; the file holds one record each.)
        var tensors = infos.Where(kv => kv.Value is TorchTensorInfo { Storage.ElementCount: > 0 }).ToList();
        foreach (var (pathA, a) in tensors)
            foreach (var (pathB, b) in tensors)
            {
                bool sameName = entries.GetProperty(pathA).GetProperty("storage").GetString() == entries.GetProperty(pathB).GetProperty("storage").GetString();
                Assert.True(sameName == ReferenceEquals(((TorchTensorInfo)a!).Storage, ((TorchTensorInfo)b!).Storage), $"{file}: storages of {pathA} and {pathB}");
            }
    }

    private static void AssertValuesEqualNpy(string file, string path, JsonElement want, Tensor tensor)
    {
        // Bit-exact: the tensor's bytes (made contiguous) against the .npy numpy wrote; bf16 against its bit patterns.
        string npy = want.GetProperty("npy").GetString()!;
        if (tensor.dtype == ScalarType.BFloat16) npy = npy.Replace(".npy", ".bf16bits.npy");
        var (descr, shape, data) = Npy.Read(TorchFormat(npy));
        Assert.Equal(tensor.shape, shape);
        Assert.Equal(NpyDescr(tensor.dtype), descr);
        using var contiguous = tensor.contiguous();
        Assert.True(data.AsSpan().SequenceEqual(contiguous.bytes), $"{file} {path}: values differ from {npy}");
    }

    [Fact]
    public void TensorsSharingAStorageShareMemory()
    {
        var root = (PickleDict)TorchCheckpoint.Load(TorchFormat("shared_storage.pt"))!;
        using var scope = torch.NewDisposeScope();
        Tensor a = (Tensor)root["a"]!, b = (Tensor)root["b"]!, c = (Tensor)root["c"]!, other = (Tensor)root["other"]!;
        var before = a.clone();
        var otherBefore = other.clone();
        b.add_(1f);                                                 // b = a[3:7], c = a.view(2, 5)
        Assert.True(a.narrow(0, 3, 4).eq(before.narrow(0, 3, 4) + 1f).all().item<bool>());
        Assert.True(a.narrow(0, 0, 3).eq(before.narrow(0, 0, 3)).all().item<bool>());
        Assert.True(c.reshape(-1).eq(a).all().item<bool>());
        Assert.True(other.eq(otherBefore).all().item<bool>());
    }

    [Fact]
    public void NestedContainersKeepTheirPythonKinds()
    {
        var root = (PickleDict)TorchCheckpoint.Load(TorchFormat("nested.pt"))!;
        Assert.False(root.IsOrdered);
        Assert.True(((PickleDict)root["model"]!).IsOrdered);
        var state = (PickleDict)((PickleDict)root["optimizer"]!)["state"]!;
        Assert.Equal([0L], state.Keys);                             // int keys stay ints
        Assert.Equal(new byte[] { 0, 1 }, root["bytes"]);
        Assert.Equal("hello é", root["str"]);
        Assert.Null(root["none"]);
        var betas = (object?[])((PickleDict)((List<object?>)((PickleDict)root["optimizer"]!)["param_groups"]!)[0]!)["betas"]!;
        Assert.Equal([0.9, 0.999], betas);
        foreach (var t in Flatten(root, ExpectedPaths).Values.OfType<Tensor>()) t.Dispose();
    }

    [Fact]
    public void ProtocolFourOpcodesAndTheOtherAllowedGlobals()
    {
        // What newer torch / pickle versions may write, built by hand: FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE,
        // BINUNICODE8, EMPTY_SET + ADDITEMS, LONG1 beyond 64 bits, torch.Size, a dtype, torch.device, _rebuild_parameter.
        var p = new PickleBuilder().Op(0x80, 4).Op(0x95).Raw(new byte[8]).Op((byte)'}').Op(0x94).Op((byte)'(');
        p.Str("size").Op(0x94).Str("torch").Str("Size").Op(0x93).Op((byte)'K', 2).Op((byte)'K', 3).Op(0x86).Op(0x85).Op((byte)'R');
        p.Str("dtype").Str("torch").Str("bfloat16").Op(0x93);
        p.Str("device").Global("torch", "device").Str("cuda").Op((byte)'K', 1).Op(0x86).Op((byte)'R');
        p.Str("param").Global("torch._utils", "_rebuild_parameter")
            .Global("torch._utils", "_rebuild_tensor_v2").Op((byte)'(')
            .Op((byte)'(').Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Op((byte)'K', 4).Op((byte)'t').Op((byte)'Q')
            .Op((byte)'K', 0).Op((byte)'K', 2).Op((byte)'K', 2).Op(0x86).Op((byte)'K', 2).Op((byte)'K', 1).Op(0x86).Op(0x89)
            .Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R').Op((byte)'t').Op((byte)'R')
            .Op(0x88).Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R').Op(0x87).Op((byte)'R');
        p.Str("again").Op((byte)'h', 1);                                               // memo 1 = "size"
        p.Str("set").Op(0x8f).Op((byte)'(').Op((byte)'K', 1).Op((byte)'K', 2).Op((byte)'K', 1).Op(0x90);
        p.Str("big").Op(0x8a, 9).Raw([0, 0, 0, 0, 0, 0, 0, 0, 1]);                   // 2^64
        p.Str("long8").Op(0x8d).Raw(BitConverter.GetBytes(3L)).Raw("é!"u8.ToArray());
        p.Op((byte)'u').Op((byte)'.');

        var storages = new Dictionary<string, TorchStorageInfo>();
        var root = (PickleDict)TorchPickle.Load(p.ToArray(), "hand.pt", storages)!;
        Assert.Equal(["size", "dtype", "device", "param", "again", "set", "big", "long8"], root.Keys);
        Assert.Equal(new object?[] { 2L, 3L }, root["size"]);
        Assert.Equal(ScalarType.BFloat16, root["dtype"]);
        Assert.Equal("cuda:1", root["device"]);
        var param = Assert.IsType<TorchTensorInfo>(root["param"]);
        Assert.True(param.RequiresGrad);
        Assert.Equal([2L, 2], param.Shape);
        Assert.Equal([2L, 1], param.Stride);
        Assert.Same(storages["0"], param.Storage);
        Assert.Equal(ScalarType.Float32, param.DType);
        Assert.Equal("size", root["again"]);
        Assert.Equal(2, ((HashSet<object>)root["set"]!).Count);
        Assert.Equal(System.Numerics.BigInteger.Pow(2, 64), root["big"]);
        Assert.Equal("é!", root["long8"]);
    }

    [Fact]
    public void ViewsReachingPastTheirStorageAndBackwardHooksAreRefused()
    {
        PickleBuilder Tensor(int numel, int size, bool hook)
        {
            var p = new PickleBuilder().Op(0x80, 2).Global("torch._utils", "_rebuild_tensor_v2").Op((byte)'(')
                .Op((byte)'(').Str("storage").Global("torch", "HalfStorage").Str("0").Str("cpu").Op((byte)'K', (byte)numel).Op((byte)'t').Op((byte)'Q')
                .Op((byte)'K', 1).Op((byte)'K', (byte)size).Op(0x85).Op((byte)'K', 1).Op(0x85).Op(0x89)
                .Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R');
            if (hook) p.Op((byte)'K', 0).Op((byte)'N').Op((byte)'s');
            return p.Op((byte)'t').Op((byte)'R').Op((byte)'.');
        }
        Assert.Equal([3L], Assert.IsType<TorchTensorInfo>(TorchPickle.Load(Tensor(4, 3, hook: false).ToArray(), "ok.pt")).Shape);
        Assert.Contains("reaches element 4 of storage '0', which holds 4",
            Assert.Throws<XrayVLException>(() => TorchPickle.Load(Tensor(4, 4, hook: false).ToArray(), "bad.pt")).Message);
        Assert.Contains("backward hooks", Assert.Throws<XrayVLException>(() => TorchPickle.Load(Tensor(4, 3, hook: true).ToArray(), "bad.pt")).Message);
    }

    // ---------------------------------------------------------------- refusals

    /// <summary>protocol 2: os.system("echo pwned") — what a hostile checkpoint looks like.</summary>
    private static byte[] OsSystemPickle() =>
        [0x80, 0x02, .. "cos\nsystem\n"u8, (byte)'X', 10, 0, 0, 0, .. "echo pwned"u8, 0x85, (byte)'R', (byte)'.'];

    [Fact]
    public void RefusesAnyOtherGlobalNamingIt()
    {
        var e = Assert.Throws<XrayVLException>(() => TorchPickle.Load(OsSystemPickle(), "evil.pt"));
        Assert.Contains("os.system", e.Message);
        Assert.StartsWith("evil.pt:", e.Message);

        // protocol 4's STACK_GLOBAL: builtins.eval
        byte[] stackGlobal = [0x80, 0x04, 0x8c, 8, .. "builtins"u8, 0x8c, 4, .. "eval"u8, 0x93, 0x8c, 1, (byte)'1', 0x85, (byte)'R', (byte)'.'];
        Assert.Contains("builtins.eval", Assert.Throws<XrayVLException>(() => TorchPickle.Load(stackGlobal, "evil.pt")).Message);

        // protocol 0's INST instantiates a class by name
        byte[] inst = [(byte)'(', .. "isubprocess\nPopen\n"u8, (byte)'.'];
        Assert.Contains("subprocess.Popen", Assert.Throws<XrayVLException>(() => TorchPickle.Load(inst, "evil.pt")).Message);

        // a global that torch itself provides but that is not plain data
        byte[] torchLoad = [0x80, 0x02, .. "ctorch\nload\n"u8, (byte)')', (byte)'R', (byte)'.'];
        Assert.Contains("torch.load", Assert.Throws<XrayVLException>(() => TorchPickle.Load(torchLoad, "evil.pt")).Message);
    }

    [Fact]
    public void RefusesAHostileGlobalInsideAZipCheckpoint()
    {
        using var dir = new TempDir("xrayvl-pickle");
        string path = Path.Combine(dir.Path, "evil.pth");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var s = zip.CreateEntry("evil/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(OsSystemPickle());
            using (var s = zip.CreateEntry("evil/version", CompressionLevel.NoCompression).Open()) s.Write("3\n"u8);
        }
        var e = Assert.Throws<XrayVLException>(() => TorchCheckpoint.Open(path));
        Assert.Contains("os.system", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData("dtypes.pt")]
    [InlineData("legacy_format.pt")]
    public void TruncatedFileIsAOneLineErrorNamingIt(string name)
    {
        using var dir = new TempDir("xrayvl-pickle");
        byte[] whole = File.ReadAllBytes(TorchFormat(name));
        foreach (int length in new[] { whole.Length / 2, whole.Length - 30, 100 })
        {
            string path = Path.Combine(dir.Path, $"cut{length}.pt");
            File.WriteAllBytes(path, whole[..length]);
            var e = Assert.Throws<XrayVLException>(() =>
            {
                using var checkpoint = TorchCheckpoint.Open(path);
                checkpoint.Materialize();
            });
            Assert.Contains(path, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [Fact]
    public void NotACheckpointIsRefused()
    {
        using var dir = new TempDir("xrayvl-pickle");
        string path = Path.Combine(dir.Path, "notes.pt");
        File.WriteAllText(path, "hello");
        Assert.Contains("not a PyTorch checkpoint", Assert.Throws<XrayVLException>(() => TorchCheckpoint.Open(path)).Message);
    }

    // ---------------------------------------------------------------- the seeds' real files

    public static TheoryData<string, string> SeedFiles => new()
    {
        { "xraygpt", "eva_vit_g.pth" },
        { "xraygpt", "blip2_pretrained_flant5xxl.pth" },
        { "xraygpt", "xraygpt_stage_checkpoint.pth" },
        { "xraygpt", "Vicuna_Radiology_fp16/pytorch_model.bin" },
        { "minigpt_med", "eva_vit_g.pth" },
        { "minigpt_med", "checkpoint_stage3.pth" },
        { "minigpt_med", "llama-2-7b-chat-hf/pytorch_model-00001-of-00002.bin" },
        { "minigpt_med", "llama-2-7b-chat-hf/pytorch_model-00002-of-00002.bin" },
    };

    [Fact]
    public void SeedFileListCoversCheckpointKeysJson()
    {
        foreach (string seed in new[] { "xraygpt", "minigpt_med" })
        {
            using var keys = JsonDocument.Parse(File.ReadAllText(Reference("seeds", seed, "checkpoint_keys.json")));
            var files = keys.RootElement.EnumerateObject().Select(p => p.Name).Where(n => !n.StartsWith('<'));
            Assert.Equal(files.Order(), SeedFiles.Where(r => r.Data.Item1 == seed).Select(r => r.Data.Item2).Order());
        }
    }

    [Theory]
    [MemberData(nameof(SeedFiles))]
    public void SeedCheckpointMatchesItsKeyList(string seed, string file)
    {
        using var keys = JsonDocument.Parse(File.ReadAllText(Reference("seeds", seed, "checkpoint_keys.json")));
        var want = keys.RootElement.GetProperty(file);
        using var checkpoint = TorchCheckpoint.Open(Reference("seeds", seed, file));
        var infos = Flatten(checkpoint.Root, KeyListPaths);
        Assert.Equal(want.EnumerateObject().Select(p => p.Name), infos.Keys);
        foreach (var entry in want.EnumerateObject())
        {
            if (infos[entry.Name] is TorchTensorInfo info)
            {
                Assert.Equal(entry.Value.GetProperty("dtype").GetString(), DTypeName(info.DType));
                Assert.Equal(Longs(entry.Value.GetProperty("shape")), info.Shape);
            }
            else AssertScalar($"{file} {entry.Name}", entry.Value, infos[entry.Name]);
        }

        // Every storage reads, and every tensor holds finite values (the seeds are random, not zero).
        using var scope = torch.NewDisposeScope();
        var tensors = Flatten(checkpoint.Materialize(), KeyListPaths).Values.OfType<Tensor>().ToList();
        Assert.Equal(infos.Values.OfType<TorchTensorInfo>().Count(), tensors.Count);
        Assert.All(tensors.Where(t => t.is_floating_point()), t => Assert.True(t.isfinite().all().item<bool>()));
    }

    [Fact]
    public void StateDictUnderAKeyAndItsRefusalsNameTheKeys()
    {
        string blip = Reference("seeds", "xraygpt", "blip2_pretrained_flant5xxl.pth");
        var model = TorchCheckpoint.LoadStateDict(blip, key: "model");
        try
        {
            Assert.Equal(69, model.Count);
            Assert.Equal([1L, 4, 64], model["query_tokens"].shape);
        }
        finally
        {
            foreach (var t in model.Values) t.Dispose();
        }
        var e = Assert.Throws<XrayVLException>(() => TorchCheckpoint.LoadStateDict(Reference("seeds", "xraygpt", "xraygpt_stage_checkpoint.pth")));
        Assert.Contains("top-level keys: model, optimizer, config, scaler, epoch", e.Message);
        Assert.Contains("no 'weights' at the top level", Assert.Throws<XrayVLException>(() => TorchCheckpoint.LoadStateDict(blip, key: "weights")).Message);
    }

    [Fact]
    public void ReadStateDictCastsEachTensorAsItComes()
    {
        using var scope = torch.NewDisposeScope();
        string eva = Reference("seeds", "xraygpt", "eva_vit_g.pth");
        var full = TorchCheckpoint.LoadStateDict(eva);
        using var checkpoint = TorchCheckpoint.Open(eva);
        int n = 0;
        foreach (var (name, tensor) in checkpoint.ReadStateDict(castTo: ScalarType.BFloat16))
        {
            Assert.Equal(ScalarType.BFloat16, tensor.dtype);
            Assert.True(tensor.eq(full[name].to(ScalarType.BFloat16)).all().item<bool>(), name);
            n++;
        }
        Assert.Equal(full.Count, n);
    }

    [Fact]
    public void HuggingFaceFoldersWithPytorchBinLoadThroughCheckpointReadWeights()
    {
        foreach (var (seed, folder) in new[] { ("xraygpt", "Vicuna_Radiology_fp16"), ("minigpt_med", "llama-2-7b-chat-hf") })
        {
            using var keys = JsonDocument.Parse(File.ReadAllText(Reference("seeds", seed, "checkpoint_keys.json")));
            var want = keys.RootElement.EnumerateObject().Where(p => p.Name.StartsWith(folder + "/", StringComparison.Ordinal))
                .SelectMany(p => p.Value.EnumerateObject()).ToList();
            var weights = Checkpoint.ReadWeights(Reference("seeds", seed, folder));
            try
            {
                Assert.Equal(want.Select(p => p.Name).Order(), weights.Keys.Order());
                foreach (var p in want)
                {
                    Assert.Equal(p.Value.GetProperty("dtype").GetString(), DTypeName(weights[p.Name].dtype));
                    Assert.Equal(Longs(p.Value.GetProperty("shape")), weights[p.Name].shape);
                }
            }
            finally
            {
                foreach (var t in weights.Values) t.Dispose();
            }
        }
    }

    [Fact]
    public void SatCheckpointModuleMatchesItsKeyList()
    {
        // SAT folder: `latest` names the iteration; <iter>/mp_rank_00_model_states.pt holds {"module": state_dict}.
        string folder = Reference("seeds", "xrayglm", "checkpoint");
        string iteration = File.ReadAllText(Path.Combine(folder, "latest")).Trim();
        var lines = File.ReadAllLines(Reference("seeds", "xrayglm", "checkpoint_keys.txt"));
        Assert.Equal("top-level keys: ['module']", lines[0]);
        var want = lines.Skip(1).Where(l => l.Length > 0).Select(l => l.Split('\t')).ToList();

        using var checkpoint = TorchCheckpoint.Open(Path.Combine(folder, iteration, "mp_rank_00_model_states.pt"));
        Assert.Equal(["module"], ((PickleDict)checkpoint.Root!).Keys);
        var entries = checkpoint.StateDictEntries("module");
        Assert.Equal(want.Select(w => w[0]), entries.Select(e => e.Name));
        foreach (var (w, (_, info)) in want.Zip(entries))
        {
            Assert.Equal(w[1], DTypeName(info.DType));
            Assert.Equal(w[2], "[" + string.Join(", ", info.Shape) + "]");
        }
        using var scope = torch.NewDisposeScope();
        int n = 0;
        foreach (var (_, tensor) in checkpoint.ReadStateDict("module", castTo: ScalarType.Float32))
        {
            Assert.Equal(ScalarType.Float32, tensor.dtype);
            n++;
        }
        Assert.Equal(want.Count, n);
    }

    // ---------------------------------------------------------------- helpers

    private delegate string ChildPath(string parent, object key, bool isIndex);

    /// <summary>expected.json: "/" is the root, "/a/b" dict keys, "[i]" list/tuple items appended ("[0]" at the root).</summary>
    private static string ExpectedPaths(string parent, object key, bool isIndex) => isIndex ? $"{parent}[{key}]" : $"{parent}/{key}";

    /// <summary>checkpoint_keys.json: "a/b" dict keys without a leading slash, "[i]" list/tuple items.</summary>
    private static string KeyListPaths(string parent, object key, bool isIndex) =>
        isIndex ? $"{parent}[{key}]" : parent.Length == 0 ? $"{key}" : $"{parent}/{key}";

    /// <summary>Every node by path, containers before their items (expected.json) — in checkpoint_keys.json style, leaves only.</summary>
    private static Dictionary<string, object?> Flatten(object? root, ChildPath child)
    {
        var result = new Dictionary<string, object?>();
        bool containers = child.Method.Name == nameof(ExpectedPaths);
        void Walk(object? node, string path)
        {
            bool isContainer = node is PickleDict or List<object?> or object?[];
            if (!isContainer || containers) result[path.Length == 0 ? "/" : path] = node;
            switch (node)
            {
                case PickleDict dict:
                    foreach (var (k, v) in dict) Walk(v, child(path, k, isIndex: false));
                    break;
                case List<object?> list:
                    for (int i = 0; i < list.Count; i++) Walk(list[i], child(path, i, isIndex: true));
                    break;
                case object?[] tuple:
                    for (int i = 0; i < tuple.Length; i++) Walk(tuple[i], child(path, i, isIndex: true));
                    break;
            }
        }
        Walk(root, "");
        return result;
    }

    private static void AssertScalar(string where, JsonElement want, object? actual)
    {
        switch (want.ValueKind)
        {
            case JsonValueKind.Null: Assert.True(actual is null, where); break;
            case JsonValueKind.True or JsonValueKind.False: Assert.True(actual is bool b && b == want.GetBoolean(), where); break;
            case JsonValueKind.String: Assert.True(actual is string s && s == want.GetString(), where); break;
            case JsonValueKind.Number when actual is long n: Assert.True(want.TryGetInt64(out long w) && w == n, where); break;
            case JsonValueKind.Number: Assert.True(actual is double d && d == want.GetDouble(), where); break;
            case JsonValueKind.Array: Assert.True(actual is byte[] bytes && bytes.SequenceEqual(want.EnumerateArray().Select(e => e.GetByte())), where); break;
            default: Assert.Fail($"{where}: unexpected JSON {want.ValueKind}"); break;
        }
    }

    private static long[] Longs(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt64()).ToArray();

    private static string DTypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "float32", ScalarType.Float16 => "float16", ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64", ScalarType.Int64 => "int64", ScalarType.Int32 => "int32", ScalarType.Int16 => "int16",
        ScalarType.Byte => "uint8", ScalarType.Int8 => "int8", ScalarType.Bool => "bool",
        _ => type.ToString(),
    };

    private static string NpyDescr(ScalarType type) => type switch
    {
        ScalarType.Float32 => "<f4", ScalarType.Float16 => "<f2", ScalarType.BFloat16 => "<u2", ScalarType.Float64 => "<f8",
        ScalarType.Int64 => "<i8", ScalarType.Int32 => "<i4", ScalarType.Byte => "|u1", ScalarType.Int8 => "|i1", ScalarType.Bool => "|b1",
        _ => type.ToString(),
    };
}

/// <summary>Writes pickle opcodes by hand, for cases the fixtures do not hold.</summary>
internal sealed class PickleBuilder
{
    private readonly List<byte> bytes = [];

    public PickleBuilder Op(byte op, params byte[] args)
    {
        bytes.Add(op);
        bytes.AddRange(args);
        return this;
    }

    public PickleBuilder Raw(byte[] data)
    {
        bytes.AddRange(data);
        return this;
    }

    /// <summary>SHORT_BINUNICODE (protocol 4) when short, else BINUNICODE.</summary>
    public PickleBuilder Str(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        return utf8.Length < 256 ? Op(0x8c, (byte)utf8.Length).Raw(utf8) : Op((byte)'X').Raw(BitConverter.GetBytes(utf8.Length)).Raw(utf8);
    }

    public PickleBuilder Global(string module, string name) => Op((byte)'c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    public byte[] ToArray() => [.. bytes];
}

/// <summary>Just enough of numpy's .npy format (v1–v3, C order) to read the fixtures' expected values.</summary>
internal static class Npy
{
    public static (string Descr, long[] Shape, byte[] Data) Read(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        if (file.Length < 10 || file[0] != 0x93 || Encoding.ASCII.GetString(file, 1, 5) != "NUMPY")
            throw new InvalidDataException($"{path}: not a .npy file");
        int major = file[6];
        int headerLength = major == 1 ? BitConverter.ToUInt16(file, 8) : BitConverter.ToInt32(file, 8);
        int start = major == 1 ? 10 : 12;
        string header = Encoding.Latin1.GetString(file, start, headerLength);
        string descr = Field(header, "descr").Trim('\'', ' ');
        if (Field(header, "fortran_order").Trim() != "False") throw new InvalidDataException($"{path}: Fortran order");
        string shapeText = Field(header, "shape").Trim(' ', '(', ')');
        long[] shape = shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        return (descr, shape, file[(start + headerLength)..]);
    }

    private static string Field(string header, string name)
    {
        int at = header.IndexOf($"'{name}':", StringComparison.Ordinal) + name.Length + 3;
        int end = name == "shape" ? header.IndexOf(')', at) + 1 : header.IndexOf(',', at);
        return header[at..end];
    }
}
