using System.Runtime.InteropServices;
using Google.Protobuf;

namespace XrayVL.IO;

/// <summary>One ONNX node: operator, input and output value names, attributes (ints, int lists, floats).</summary>
public sealed record OnnxNode(string OpType, string Name, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, long[]> Ints, IReadOnlyDictionary<string, float> Floats)
{
    /// <summary>An int-list attribute (`kernel_shape`, `strides`, `pads`), or <paramref name="fallback"/> when absent.</summary>
    public long[] IntsOr(string name, long[] fallback) => Ints.TryGetValue(name, out var v) ? v : fallback;
}

/// <summary>A float32 initializer: dims as ONNX lists them (row-major) and its values.</summary>
public sealed record OnnxTensor(string Name, long[] Dims, float[] Data);

/// <summary>
/// The parts of an ONNX model (onnx.proto: ModelProto → GraphProto) that a weight conversion needs: nodes in graph order
/// (ONNX requires topological order), float32 initializers, and the graph's input and output names. Read with
/// Google.Protobuf's wire-format reader; only the fields below are decoded, every other field is skipped.
/// Field numbers (onnx.proto): ModelProto.producer_name 2, graph 7; GraphProto node 1, initializer 5, input 11,
/// output 12; NodeProto input 1, output 2, name 3, op_type 4, attribute 5; AttributeProto name 1, f 2, i 3, ints 8;
/// TensorProto dims 1, data_type 2, float_data 4, name 8, raw_data 9; ValueInfoProto name 1.
/// </summary>
public sealed class OnnxGraph
{
    private const int FloatType = 1; // TensorProto.DataType.FLOAT

    public required string Producer { get; init; }
    public required IReadOnlyList<OnnxNode> Nodes { get; init; }
    public required IReadOnlyDictionary<string, OnnxTensor> Initializers { get; init; }
    /// <summary>Graph inputs that are not initializers (old exporters list initializers as inputs too).</summary>
    public required IReadOnlyList<string> Inputs { get; init; }
    public required IReadOnlyList<string> Outputs { get; init; }

    /// <summary>Reads an .onnx file; a file that is not an ONNX model is a one-line <see cref="XrayVLException"/>.</summary>
    public static OnnxGraph Read(string path)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        try { return Parse(File.ReadAllBytes(path)); }
        catch (InvalidProtocolBufferException e) { throw new XrayVLException($"{path}: not an ONNX model ({e.Message})", e); }
        catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}", e); }
    }

    public static OnnxGraph Parse(byte[] bytes)
    {
        string producer = "";
        ByteString? graph = null;
        var model = new CodedInputStream(bytes);
        for (uint tag; (tag = model.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 2: producer = model.ReadString(); break;
                case 7: graph = model.ReadBytes(); break;
                default: model.SkipLastField(); break;
            }
        }
        if (graph is null) throw new XrayVLException("not an ONNX model: no graph");

        var nodes = new List<OnnxNode>();
        var initializers = new Dictionary<string, OnnxTensor>();
        var inputs = new List<string>();
        var outputs = new List<string>();
        var g = graph.CreateCodedInput();
        for (uint tag; (tag = g.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: nodes.Add(ReadNode(g.ReadBytes())); break;
                case 5:
                    var t = ReadTensor(g.ReadBytes());
                    initializers[t.Name] = t;
                    break;
                case 11: inputs.Add(ReadValueInfoName(g.ReadBytes())); break;
                case 12: outputs.Add(ReadValueInfoName(g.ReadBytes())); break;
                default: g.SkipLastField(); break;
            }
        }
        return new OnnxGraph
        {
            Producer = producer,
            Nodes = nodes,
            Initializers = initializers,
            Inputs = inputs.Where(n => !initializers.ContainsKey(n)).ToList(),
            Outputs = outputs,
        };
    }

    private static OnnxNode ReadNode(ByteString bytes)
    {
        string op = "", name = "";
        var inputs = new List<string>();
        var outputs = new List<string>();
        var ints = new Dictionary<string, long[]>();
        var floats = new Dictionary<string, float>();
        var s = bytes.CreateCodedInput();
        for (uint tag; (tag = s.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: inputs.Add(s.ReadString()); break;
                case 2: outputs.Add(s.ReadString()); break;
                case 3: name = s.ReadString(); break;
                case 4: op = s.ReadString(); break;
                case 5: ReadAttribute(s.ReadBytes(), ints, floats); break;
                default: s.SkipLastField(); break;
            }
        }
        return new OnnxNode(op, name, inputs, outputs, ints, floats);
    }

    private static void ReadAttribute(ByteString bytes, Dictionary<string, long[]> ints, Dictionary<string, float> floats)
    {
        string name = "";
        float? f = null;
        long? i = null;
        var list = new List<long>();
        var s = bytes.CreateCodedInput();
        for (uint tag; (tag = s.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: name = s.ReadString(); break;
                case 2: f = s.ReadFloat(); break;
                case 3: i = s.ReadInt64(); break;
                case 8: ReadInt64s(s, tag, list); break;
                default: s.SkipLastField(); break;
            }
        }
        if (list.Count > 0) ints[name] = [.. list];
        else if (i is { } one) ints[name] = [one];
        if (f is { } value) floats[name] = value;
    }

    private static OnnxTensor ReadTensor(ByteString bytes)
    {
        string name = "";
        int dataType = 0;
        var dims = new List<long>();
        var values = new List<float>();
        ByteString? raw = null;
        var s = bytes.CreateCodedInput();
        for (uint tag; (tag = s.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: ReadInt64s(s, tag, dims); break;
                case 2: dataType = s.ReadInt32(); break;
                case 4:
                    if (WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                        values.AddRange(MemoryMarshal.Cast<byte, float>(s.ReadBytes().Span).ToArray()); // packed, little-endian
                    else values.Add(s.ReadFloat());
                    break;
                case 8: name = s.ReadString(); break;
                case 9: raw = s.ReadBytes(); break;
                default: s.SkipLastField(); break;
            }
        }
        if (dataType != FloatType)
            throw new XrayVLException($"initializer '{name}' has ONNX data type {dataType}; only float32 (1) is supported");
        float[] data = raw is { Length: > 0 } ? MemoryMarshal.Cast<byte, float>(raw.Span).ToArray() : [.. values];
        long count = dims.Aggregate(1L, (a, d) => a * d);
        if (data.Length != count)
            throw new XrayVLException($"initializer '{name}' holds {data.Length} values for dims ({string.Join(", ", dims)})");
        return new OnnxTensor(name, [.. dims], data);
    }

    private static string ReadValueInfoName(ByteString bytes)
    {
        var s = bytes.CreateCodedInput();
        for (uint tag; (tag = s.ReadTag()) != 0;)
        {
            if (WireFormat.GetTagFieldNumber(tag) == 1) return s.ReadString();
            s.SkipLastField();
        }
        return "";
    }

    /// <summary>A repeated int64 field, packed (one length-delimited run) or not (one varint per tag).</summary>
    private static void ReadInt64s(CodedInputStream s, uint tag, List<long> into)
    {
        if (WireFormat.GetTagWireType(tag) != WireFormat.WireType.LengthDelimited)
        {
            into.Add(s.ReadInt64());
            return;
        }
        var packed = s.ReadBytes().CreateCodedInput();
        while (!packed.IsAtEnd) into.Add(packed.ReadInt64());
    }
}
