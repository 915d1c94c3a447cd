using System.Buffers.Binary;
using System.Text;
using TorchSharp;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

public sealed class SafeTensorsTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"xrayvl-st-{Guid.NewGuid():N}");

    public SafeTensorsTests() => Directory.CreateDirectory(dir);

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void StreamWriterWritesTheSameBytesAsSaveAndSaveStreamed()
    {
        // Save's order (largest element first, then name); a name outside ASCII checks that one encoder writes every header.
        var tensors = new Dictionary<string, Tensor>
        {
            ["a.weight"] = torch.arange(12, ScalarType.Float32).view(3, 4),
            ["b.层"] = torch.arange(5, ScalarType.Int64),
            ["c.mask"] = torch.tensor(new[] { true, false, true }),
            ["d.half"] = torch.arange(6, ScalarType.Float16).view(2, 3),
        };
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["source"] = "测试" };
        SafeTensors.Save(PathOf("saved.safetensors"), tensors, metadata);
        var order = tensors.OrderByDescending(kv => SafeTensors.ElementSize(kv.Value.dtype)).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        using (var writer = new SafeTensorsStreamWriter(PathOf("streamed.safetensors")))
        {
            foreach (var (name, tensor) in order) writer.Add(name, tensor);
            writer.Commit(metadata);
        }
        SafeTensors.SaveStreamed(PathOf("laid-out.safetensors"), [.. tensors.Select(kv => (kv.Key, kv.Value.dtype, kv.Value.shape))],
            name => tensors[name].clone(), metadata);
        byte[] saved = File.ReadAllBytes(PathOf("saved.safetensors"));
        Assert.Equal(saved, File.ReadAllBytes(PathOf("streamed.safetensors")));
        Assert.Equal(saved, File.ReadAllBytes(PathOf("laid-out.safetensors")));
        Assert.Contains("测试", Encoding.UTF8.GetString(saved));                  // written as it is, not \u-escaped
        Assert.Empty(Directory.GetFiles(dir, "*.data-*"));                       // the stream writer's side file is gone
    }

    // ---------------------------------------------------------------- round trips

    public static TheoryData<ScalarType> AllTypes =>
    [
        ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float64,
        ScalarType.Int64, ScalarType.Int32, ScalarType.Int16, ScalarType.Int8, ScalarType.Byte, ScalarType.Bool,
    ];

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void RoundTripKeepsDtypeShapeAndExactBytes(ScalarType type)
    {
        using var scope = torch.NewDisposeScope();
        var generator = new torch.Generator(seed: 7);
        Tensor original = type switch
        {
            ScalarType.Bool => torch.randint(0, 2, [3, 5], generator: generator).to(ScalarType.Bool),
            ScalarType.Byte or ScalarType.Int8 or ScalarType.Int16 or ScalarType.Int32 or ScalarType.Int64
                => torch.randint(-100, 100, [3, 5], generator: generator).to(type),
            // Floats: random values plus specials whose bit patterns must survive (±0, ±inf, NaN, tiny).
            _ => torch.cat([torch.randn(13, generator: generator), torch.tensor(new[] { -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 1e-40f })])
                .to(type),
        };
        var empty = torch.zeros([0, 4], type);
        var scalar = torch.ones([], type);
        string path = PathOf("roundtrip.safetensors");

        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["x"] = original, ["empty"] = empty, ["scalar"] = scalar });
        var loaded = SafeTensors.Load(path);

        Assert.Equal(["empty", "scalar", "x"], loaded.Keys.Order());
        foreach (var (name, expected) in new[] { ("x", original), ("empty", empty), ("scalar", scalar) })
        {
            Assert.Equal(type, loaded[name].dtype);
            Assert.Equal(expected.shape, loaded[name].shape);
            Assert.Equal(expected.bytes.ToArray(), loaded[name].bytes.ToArray());
        }
    }

    [Fact]
    public void SavedLayoutFollowsTheSpecification()
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("layout.safetensors");
        var values = new[] { 1.5f, -2f, 3.25f };
        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            ["b_half"] = torch.tensor(new[] { 1f, 2f }).to(ScalarType.BFloat16),
            ["a_float"] = torch.tensor(values),
            ["c_long"] = torch.tensor(new[] { 5L }),
        });

        byte[] file = File.ReadAllBytes(path);
        long n = BinaryPrimitives.ReadInt64LittleEndian(file);
        Assert.Equal(0, (8 + n) % 8);                          // data section 8-byte aligned
        string header = Encoding.UTF8.GetString(file, 8, (int)n);
        Assert.StartsWith("{", header);
        Assert.DoesNotContain("\n", header);

        // Largest elements first, then by name: I64 (8 B), F32 (12 B), BF16 (4 B).
        Assert.Equal("""{"c_long":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"a_float":{"dtype":"F32","shape":[3],"data_offsets":[8,20]},"b_half":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]}}""",
            header.TrimEnd(' '));
        long data = 8 + n;
        Assert.Equal(5L, BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan((int)data)));
        for (int i = 0; i < 3; i++)
            Assert.Equal(values[i], BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)data + 8 + 4 * i)));
        Assert.Equal(0x3F80, BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)data + 20)));  // bf16 1.0
        Assert.Equal(0x4000, BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)data + 22)));  // bf16 2.0
        Assert.Equal(data + 24, file.Length);
    }

    /// <summary>Writes a file by hand from the format description: length, JSON header, raw bytes.</summary>
    private static void WriteRaw(string path, string headerJson, byte[] data, int padTo = 1)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        int padded = (header.Length + padTo - 1) / padTo * padTo;
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(header);
        for (int i = header.Length; i < padded; i++) stream.WriteByte((byte)' ');
        stream.Write(data);
    }

    private static byte[] HandBuiltData()
    {
        // "w" F32 (2, 2) = [[1, 2], [3, 4]] at [0, 16); "h" BF16 (3,) = [1, -2, 3.140625] at [16, 22);
        // "f" F16 (2,) = [0.5, -65504] at [22, 26); "i" I32 (1,) = [-7] at [26, 30).
        var data = new byte[30];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4 * i), i + 1);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(16), 0x3F80);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(18), 0xC000);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(20), 0x4049);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(22), 0x3800);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(24), 0xFBFF);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(26), -7);
        return data;
    }

    private const string HandBuiltHeader =
        """{"__metadata__":{"format":"pt","note":"胸片"},"i":{"dtype":"I32","shape":[1],"data_offsets":[26,30]},""" +
        """ "h":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},""" +
        """ "f":{"dtype":"F16","shape":[2],"data_offsets":[22,26]}}""";

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    public void HandBuiltFileLoadsWithCorrectValues(int padTo)
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("hand.safetensors");
        WriteRaw(path, HandBuiltHeader, HandBuiltData(), padTo);

        var header = SafeTensors.ReadHeader(path);
        Assert.Equal(["w", "h", "f", "i"], header.Tensors.Select(t => t.Name));   // data order
        Assert.Equal(new Dictionary<string, string> { ["format"] = "pt", ["note"] = "胸片" }, header.Metadata);

        var loaded = SafeTensors.Load(path);
        Assert.Equal(ScalarType.Float32, loaded["w"].dtype);
        Assert.Equal([2L, 2L], loaded["w"].shape);
        Assert.Equal([1f, 2f, 3f, 4f], loaded["w"].data<float>().ToArray());
        Assert.Equal(ScalarType.BFloat16, loaded["h"].dtype);
        Assert.Equal([1f, -2f, 3.140625f], loaded["h"].to(ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(ScalarType.Float16, loaded["f"].dtype);
        Assert.Equal([0.5f, -65504f], loaded["f"].to(ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(-7, loaded["i"].item<int>());
    }

    [Fact]
    public void LoadCastsFloatingTensorsOnlyAndLoadsByName()
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("hand.safetensors");
        WriteRaw(path, HandBuiltHeader, HandBuiltData());

        var cast = SafeTensors.Load(path, castTo: ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, cast["w"].dtype);
        Assert.Equal(ScalarType.BFloat16, cast["f"].dtype);
        Assert.Equal(ScalarType.Int32, cast["i"].dtype);          // integers are never cast
        Assert.Equal([1f, 2f, 3f, 4f], cast["w"].to(ScalarType.Float32).data<float>().ToArray());

        var some = SafeTensors.Load(path, ["h"]);
        Assert.Equal(["h"], some.Keys);
        var ex = Assert.Throws<XrayVLException>(() => SafeTensors.Load(path, ["nope"]));
        Assert.Contains("nope", ex.Message);
    }

    [Fact]
    public void MetadataRoundTrips()
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("meta.safetensors");
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["模型"] = "XrayVL \"quoted\"\n", ["empty"] = "" };
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["x"] = torch.ones(2) }, metadata);
        Assert.Equal(metadata, SafeTensors.ReadHeader(path).Metadata);

        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["x"] = torch.ones(2) });
        Assert.Empty(SafeTensors.ReadHeader(path).Metadata);
    }

    [Fact]
    public void NonContiguousTensorsAreSavedByValue()
    {
        using var scope = torch.NewDisposeScope();
        var matrix = torch.arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        var transposed = matrix.t();   // (4, 3), not contiguous
        string path = PathOf("t.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["t"] = transposed });
        var loaded = SafeTensors.Load(path)["t"];
        Assert.True(Same(loaded, transposed));
    }

    [Fact]
    public void TensorsLargerThanOneChunkRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        long count = SafeTensors.ChunkBytes / 4 * 2 + 123;   // spans three read chunks
        var big = torch.arange(count, dtype: ScalarType.Float32);
        string path = PathOf("big.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["big"] = big, ["tail"] = torch.tensor(new[] { 9.5f }) });
        var loaded = SafeTensors.Load(path);
        Assert.True(Same(loaded["big"], big));
        Assert.Equal(9.5f, loaded["tail"].item<float>());
    }

    [Fact]
    public void SaveRejectsUnsupportedDtypesAndNames()
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("bad-save.safetensors");
        var ex = Assert.Throws<XrayVLException>(() =>
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["z"] = torch.ones(2, ScalarType.ComplexFloat32) }));
        Assert.Contains(path, ex.Message);
        Assert.Contains("'z'", ex.Message);
        Assert.Throws<XrayVLException>(() => SafeTensors.Save(path, new Dictionary<string, Tensor> { [SafeTensors.MetadataKey] = torch.ones(2) }));
        Assert.Empty(Directory.GetFiles(dir));
    }

    [Fact]
    public void SaveReplacesAtomicallyAndLeavesNoTemporaryFiles()
    {
        using var scope = torch.NewDisposeScope();
        string path = PathOf("atomic.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a"] = torch.ones(3) });
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["b"] = torch.zeros(2) });
        Assert.Equal(["b"], SafeTensors.Load(path).Keys);
        Assert.Equal(["atomic.safetensors"], Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    // ---------------------------------------------------------------- corrupt files

    private string ValidFile()
    {
        string path = PathOf("valid.safetensors");
        WriteRaw(path, HandBuiltHeader, HandBuiltData(), padTo: 8);
        return path;
    }

    private void AssertRejected(string path, params string[] fragments)
    {
        var ex = Assert.Throws<XrayVLException>(() => SafeTensors.Load(path));
        Assert.Contains(path, ex.Message);
        foreach (string fragment in fragments) Assert.Contains(fragment, ex.Message);
    }

    [Fact]
    public void TruncatedFilesAreRejected()
    {
        string path = ValidFile();
        byte[] bytes = File.ReadAllBytes(path);

        File.WriteAllBytes(path, bytes[..^1]);
        AssertRejected(path, "truncated");

        File.WriteAllBytes(path, bytes[..20]);                 // inside the header
        AssertRejected(path, "truncated");

        File.WriteAllBytes(path, bytes[..5]);
        AssertRejected(path, "8-byte");

        File.WriteAllBytes(path, []);
        AssertRejected(path, "8-byte");
    }

    [Fact]
    public void CorruptHeadersAreRejected()
    {
        string path = PathOf("bad.safetensors");
        var data = HandBuiltData();

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]""", data);
        AssertRejected(path, "not valid JSON");

        WriteRaw(path, "[1, 2, 3]", data);
        AssertRejected(path, "not an object");

        WriteRaw(path, """{"w":{"dtype":"Q4","shape":[2,2],"data_offsets":[0,16]}}""", data);
        AssertRejected(path, "'w'", "Q4");

        WriteRaw(path, """{"w":{"shape":[2,2],"data_offsets":[0,16]}}""", data);
        AssertRejected(path, "dtype");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}}""", data);
        AssertRejected(path, "shape");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"n":1}}""", data);
        AssertRejected(path, "__metadata__");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""", data);
        AssertRejected(path, "twice");

        // Header length field beyond the file, and absurdly large.
        byte[] bytes = File.ReadAllBytes(ValidFile());
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length);
        File.WriteAllBytes(path, bytes);
        AssertRejected(path, "truncated");
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue);
        File.WriteAllBytes(path, bytes);
        AssertRejected(path, "header length");
    }

    [Fact]
    public void WrongOffsetsAreRejected()
    {
        string path = PathOf("offsets.safetensors");
        var data = HandBuiltData();

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}""", data);
        AssertRejected(path, "'w'", "16 bytes", "give 12");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[20,36]}}""", data);
        AssertRejected(path, "past the data section");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}}""", data);
        AssertRejected(path, "end before");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}""", data);
        AssertRejected(path, "overlap", "'w'", "'v'");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0]}}""", data);
        AssertRejected(path, "data_offsets");

        WriteRaw(path, """{"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]}}""", data);
        AssertRejected(path, "impossible");
    }

    [Fact]
    public void MissingFileIsRejected()
    {
        string path = PathOf("absent.safetensors");
        AssertRejected(path, "cannot open");
    }

    [Fact(Timeout = 60_000)]
    public async Task RandomMutationsOnlyEverThrowXrayVLException()
    {
        await Task.Yield();
        byte[] valid = File.ReadAllBytes(ValidFile());
        string path = PathOf("mutant.safetensors");
        var random = new Random(1234);
        int accepted = 0, rejected = 0;
        for (int trial = 0; trial < 400; trial++)
        {
            TestContext.Current.CancellationToken.ThrowIfCancellationRequested();
            byte[] bytes = (byte[])valid.Clone();
            switch (trial % 4)
            {
                case 0:   // flip a few bytes anywhere
                    for (int k = random.Next(1, 4); k > 0; k--) bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
                    break;
                case 1:   // printable characters into the header: keeps the JSON parseable more often
                    for (int k = random.Next(1, 3); k > 0; k--) bytes[8 + random.Next(bytes.Length - 38)] = (byte)"0123456789,:[]{}\" -"[random.Next(19)];
                    break;
                case 2:   // cut the file short
                    bytes = bytes[..random.Next(bytes.Length)];
                    break;
                default:  // damage the header length field
                    bytes[random.Next(8)] = (byte)random.Next(256);
                    break;
            }
            File.WriteAllBytes(path, bytes);
            try
            {
                using var scope = torch.NewDisposeScope();
                SafeTensors.Load(path);
                accepted++;
            }
            catch (XrayVLException e)
            {
                Assert.Contains(path, e.Message);
                rejected++;
            }
        }
        Assert.True(rejected > 200, $"only {rejected} mutations rejected");
        Assert.True(accepted > 0, "no mutation left a loadable file (a mutation in the data bytes should)");
    }

    // ---------------------------------------------------------------- modules

    private sealed class TinyNet : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Linear fc1;
        private readonly TorchSharp.Modules.LayerNorm norm;
        private readonly TorchSharp.Modules.Linear fc2;
        private readonly Tensor running;   // a buffer, to show buffers travel too

        public TinyNet(int hidden = 6) : base(nameof(TinyNet))
        {
            fc1 = nn.Linear(4, hidden);
            norm = nn.LayerNorm(hidden);
            fc2 = nn.Linear(hidden, 3);
            running = torch.randn(3);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => fc2.forward(norm.forward(fc1.forward(x))).add(running);
    }

    [Fact]
    public void ModuleRoundTripReproducesOutputs()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(1);
        var source = new TinyNet();
        var target = new TinyNet();
        string path = PathOf("tiny.safetensors");
        ModuleWeights.SaveModule(path, source, prefix: "model");

        var tensors = SafeTensors.Load(path);
        Assert.Equal(["model.fc1.bias", "model.fc1.weight", "model.fc2.bias", "model.fc2.weight", "model.norm.bias", "model.norm.weight", "model.running"],
            tensors.Keys.Order(StringComparer.Ordinal));
        var report = ModuleWeights.LoadInto(target, tensors, prefix: "model.");
        Assert.True(report.IsComplete);
        Assert.Equal(7, report.Loaded.Count);

        var x = torch.randn(5, 4);
        Assert.True(Same(target.forward(x), source.forward(x)));
        Assert.True(target.parameters().All(p => p.requires_grad));   // copying did not detach the parameters
    }

    [Fact]
    public void LoadIntoCastsToTheParameterDtype()
    {
        using var scope = torch.NewDisposeScope();
        var source = new TinyNet();
        var target = new TinyNet();
        var halves = source.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.BFloat16));
        ModuleWeights.LoadInto(target, halves);
        foreach (var (name, parameter) in target.state_dict())
        {
            Assert.Equal(ScalarType.Float32, parameter.dtype);
            Assert.True(Same(parameter, halves[name].to(ScalarType.Float32)), name);
        }
    }

    [Fact]
    public void StrictLoadIntoNamesMissingUnexpectedAndMisshapenKeys()
    {
        using var scope = torch.NewDisposeScope();
        var target = new TinyNet();
        var before = target.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var other = new TinyNet(hidden: 8);
        var tensors = other.state_dict().Where(kv => kv.Key != "fc2.bias").ToDictionary(kv => kv.Key, kv => kv.Value);
        tensors["extra.weight"] = torch.ones(1);
        tensors["elsewhere"] = torch.ones(1);

        var ex = Assert.Throws<XrayVLException>(() => ModuleWeights.LoadInto(target, tensors));
        Assert.Contains("fc2.bias", ex.Message);
        Assert.Contains("extra.weight", ex.Message);
        Assert.Contains("fc1.weight: checkpoint (8, 4) vs model (6, 4)", ex.Message);
        // Nothing was copied on failure.
        Assert.All(target.state_dict(), kv => Assert.True(Same(kv.Value, before[kv.Key]), kv.Key));

        // Not strict: the fitting keys load, the rest is reported; keys outside the prefix are ignored.
        var report = ModuleWeights.LoadInto(target, tensors.ToDictionary(kv => "m." + kv.Key, kv => kv.Value), prefix: "m", strict: false);
        Assert.Equal(["m.fc2.bias"], report.Missing);
        Assert.Equal(["m.elsewhere", "m.extra.weight"], report.Unexpected);
        Assert.Equal(5, report.ShapeMismatches.Count);   // fc1.weight, fc1.bias, norm.weight, norm.bias, fc2.weight (3, 8) vs (3, 6)
        Assert.Contains("m.running", report.Loaded);
        Assert.True(Same(target.state_dict()["running"], other.state_dict()["running"]));
    }
}
