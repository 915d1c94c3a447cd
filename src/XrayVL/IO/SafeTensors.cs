using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>One tensor's entry in a safetensors header: where its bytes lie in the data section.</summary>
/// <param name="Begin">Offset of the first byte, relative to the start of the data section.</param>
/// <param name="End">Offset one past the last byte.</param>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public ScalarType ScalarType => SafeTensors.ScalarTypeOf(DType);
    public long ByteLength => End - Begin;
    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);
}

/// <summary>A parsed and validated safetensors header.</summary>
/// <param name="Tensors">Entries in data order (ascending <see cref="SafeTensorInfo.Begin"/>).</param>
/// <param name="Metadata">The free-form <c>__metadata__</c> map (empty when absent).</param>
/// <param name="DataStart">File offset of the data section: 8 + header length.</param>
public sealed record SafeTensorsHeader(
    IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata, long DataStart)
{
    public SafeTensorInfo? Find(string name) => Tensors.FirstOrDefault(t => t.Name == name);
}

/// <summary>
/// Reader and writer for the safetensors format (Hugging Face): an 8-byte little-endian header length N,
/// N bytes of UTF-8 JSON <c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}</c>,
/// then the raw little-endian tensor bytes, offsets relative to the start of that data section.
/// </summary>
/// <remarks>
/// Loading reads each tensor's bytes from the file straight into the buffer of a freshly allocated tensor
/// (no intermediate managed copy), so a file of several GB needs its own size in memory, not twice that.
/// Every header field is checked against the file before anything is allocated: a corrupt file
/// gives an <see cref="XrayVLException"/> naming the file, never a huge allocation or a raw exception.
/// </remarks>
public static class SafeTensors
{
    public const string MetadataKey = "__metadata__";

    /// <summary>A header longer than this is treated as corrupt (real headers are kilobytes to a few MB).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Bytes moved per read/write call; also keeps each span under int.MaxValue for tensors over 2 GB.</summary>
    public const int ChunkBytes = 16 * 1024 * 1024;

    // safetensors dtype name ↔ torch dtype; element sizes come from torch.
    private static readonly (string Name, ScalarType Type)[] DTypes =
    [
        ("F64", ScalarType.Float64), ("F32", ScalarType.Float32), ("F16", ScalarType.Float16),
        ("BF16", ScalarType.BFloat16), ("I64", ScalarType.Int64), ("I32", ScalarType.Int32),
        ("I16", ScalarType.Int16), ("I8", ScalarType.Int8), ("U8", ScalarType.Byte), ("BOOL", ScalarType.Bool),
    ];

    /// <summary>The torch dtype for a safetensors dtype name; throws <see cref="XrayVLException"/> for any other name.</summary>
    public static ScalarType ScalarTypeOf(string dtype)
    {
        foreach (var (name, type) in DTypes)
            if (name == dtype) return type;
        throw new XrayVLException($"unsupported safetensors dtype '{dtype}' (supported: {string.Join(", ", DTypes.Select(d => d.Name))})");
    }

    /// <summary>The safetensors dtype name for a torch dtype.</summary>
    public static string DTypeNameOf(ScalarType type)
    {
        foreach (var (name, t) in DTypes)
            if (t == type) return name;
        throw new XrayVLException($"tensor dtype {type} cannot be stored in safetensors by XrayVL");
    }

    public static int ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        _ => throw new XrayVLException($"tensor dtype {type} cannot be stored in safetensors by XrayVL"),
    };

    // ---------------------------------------------------------------- reading

    /// <summary>Reads and validates the header only; no tensor data is read.</summary>
    public static SafeTensorsHeader ReadHeader(string path)
    {
        using var stream = OpenRead(path);
        return ReadHeader(stream, path);
    }

    /// <summary>
    /// Loads every tensor of the file as a CPU tensor of the stored dtype, then optionally casts it
    /// (<paramref name="castTo"/>, floating-point tensors only) and moves it (<paramref name="device"/>), one tensor at a time.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path, Device? device = null, ScalarType? castTo = null)
    {
        using var stream = OpenRead(path);
        var header = ReadHeader(stream, path);
        var result = new Dictionary<string, Tensor>(header.Tensors.Count);
        try
        {
            foreach (var info in header.Tensors)
                result.Add(info.Name, ReadTensor(stream, path, header, info, device, castTo));
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>Loads only the named tensors (each must exist), e.g. one shard's share of a model.</summary>
    public static Dictionary<string, Tensor> Load(string path, IEnumerable<string> names, Device? device = null, ScalarType? castTo = null)
    {
        using var stream = OpenRead(path);
        var header = ReadHeader(stream, path);
        var result = new Dictionary<string, Tensor>();
        try
        {
            foreach (string name in names)
            {
                if (result.ContainsKey(name)) continue;
                var info = header.Find(name) ?? throw new XrayVLException($"{path}: no tensor named '{name}'");
                result[name] = ReadTensor(stream, path, header, info, device, castTo);
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    private static FileStream OpenRead(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new XrayVLException($"{path}: cannot open safetensors file ({e.Message})", e);
        }
    }

    private static SafeTensorsHeader ReadHeader(FileStream stream, string path)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw new XrayVLException($"{path}: not a safetensors file ({fileLength} bytes, shorter than the 8-byte header length)");

        Span<byte> lengthBytes = stackalloc byte[8];
        stream.Position = 0;
        stream.ReadExactly(lengthBytes);
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)MaxHeaderBytes)
            throw new XrayVLException($"{path}: corrupt safetensors header length {headerLength} (limit {MaxHeaderBytes} bytes)");
        if (8 + (long)headerLength > fileLength)
            throw new XrayVLException($"{path}: truncated safetensors file: header of {headerLength} bytes but file is {fileLength} bytes");

        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        return ParseHeader(headerBytes, path, dataStart, dataLength: fileLength - dataStart);
    }

    private static SafeTensorsHeader ParseHeader(byte[] headerBytes, string path, long dataStart, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes))
            throw new XrayVLException($"{path}: safetensors header is not valid UTF-8 text");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (Exception e) when (e is JsonException or ArgumentException or DecoderFallbackException)
        {
            throw new XrayVLException($"{path}: safetensors header is not valid JSON ({e.Message})", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new XrayVLException($"{path}: safetensors header is a JSON {root.ValueKind}, not an object");

            var tensors = new List<SafeTensorInfo>();
            var metadata = new Dictionary<string, string>();
            var seen = new HashSet<string>();
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new XrayVLException($"{path}: safetensors header names '{property.Name}' twice");
                if (property.Name == MetadataKey)
                    ParseMetadata(property.Value, path, metadata);
                else
                    tensors.Add(ParseEntry(property.Name, property.Value, path, dataLength));
            }

            // Data order; neighbours must not overlap (end > begin of the next).
            tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            for (int i = 1; i < tensors.Count; i++)
            {
                if (tensors[i].Begin < tensors[i - 1].End)
                    throw new XrayVLException(
                        $"{path}: tensors '{tensors[i - 1].Name}' [{tensors[i - 1].Begin}, {tensors[i - 1].End}) and " +
                        $"'{tensors[i].Name}' [{tensors[i].Begin}, {tensors[i].End}) overlap in the data section");
            }
            return new SafeTensorsHeader(tensors, metadata, dataStart);
        }
    }

    private static void ParseMetadata(JsonElement value, string path, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new XrayVLException($"{path}: safetensors {MetadataKey} must be an object of strings, found {value.ValueKind}");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new XrayVLException($"{path}: safetensors {MetadataKey}.{item.Name} must be a string, found {item.Value.ValueKind}");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafeTensorInfo ParseEntry(string name, JsonElement entry, string path, long dataLength)
    {
        string where = $"{path}: tensor '{name}'";
        if (entry.ValueKind != JsonValueKind.Object)
            throw new XrayVLException($"{where}: header entry is a JSON {entry.ValueKind}, not an object");

        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new XrayVLException($"{where}: missing string field 'dtype'");
        string dtype = dtypeElement.GetString()!;
        ScalarType type;
        try
        {
            type = ScalarTypeOf(dtype);
        }
        catch (XrayVLException e)
        {
            throw new XrayVLException($"{where}: {e.Message}", e);
        }

        long[] shape = ReadIntegerArray(entry, "shape", where);
        long[] offsets = ReadIntegerArray(entry, "data_offsets", where);
        if (offsets.Length != 2)
            throw new XrayVLException($"{where}: 'data_offsets' must hold two numbers [begin, end], found {offsets.Length}");
        var (begin, end) = (offsets[0], offsets[1]);
        if (begin > end)
            throw new XrayVLException($"{where}: data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength)
            throw new XrayVLException(
                $"{where}: data_offsets [{begin}, {end}] reach past the data section of {dataLength} bytes (truncated file?)");

        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (n, d) => n * d) * ElementSize(type));
        }
        catch (OverflowException)
        {
            expected = -1;
        }
        if (expected != end - begin)
            throw new XrayVLException(
                $"{where}: shape [{string.Join(", ", shape)}] of {dtype} needs {(expected < 0 ? "an impossible number of" : expected.ToString())} bytes " +
                $"but data_offsets [{begin}, {end}] give {end - begin}");

        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static long[] ReadIntegerArray(JsonElement entry, string field, string where)
    {
        if (!entry.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
            throw new XrayVLException($"{where}: missing array field '{field}'");
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long value) || value < 0)
                throw new XrayVLException($"{where}: '{field}' must hold non-negative integers, found {item.GetRawText()}");
            values[i++] = value;
        }
        return values;
    }

    /// <summary>
    /// Reads <paramref name="elementCount"/> elements from <paramref name="source"/> straight into the buffer of the 1-D
    /// tensor <paramref name="flat"/>, chunk by chunk (each span stays under 2 GB, and no second copy is made); false when
    /// the stream ends early. Every checkpoint reader fills its tensors this way.
    /// </summary>
    internal static bool ReadInto(Tensor flat, Stream source, long elementCount, long elementSize)
    {
        long perChunk = ChunkBytes / elementSize;
        for (long first = 0; first < elementCount; first += perChunk)
        {
            long count = Math.Min(perChunk, elementCount - first);
            using var chunk = flat.narrow(0, first, count);
            if (source.ReadAtLeast(chunk.bytes, (int)(count * elementSize), throwOnEndOfStream: false) < count * elementSize)
                return false;
        }
        return true;
    }

    private static Tensor ReadTensor(FileStream stream, string path, SafeTensorsHeader header, SafeTensorInfo info,
        Device? device, ScalarType? castTo)
    {
        var tensor = torch.empty(info.Shape, info.ScalarType, torch.CPU);
        try
        {
            stream.Position = header.DataStart + info.Begin;
            using (var flat = tensor.view(-1))
                if (!ReadInto(flat, stream, info.ElementCount, ElementSize(info.ScalarType)))
                    throw new XrayVLException($"{path}: truncated safetensors file: tensor '{info.Name}' ends early");
        }
        catch (IOException e)
        {
            tensor.Dispose();
            throw new XrayVLException($"{path}: cannot read tensor '{info.Name}' ({e.Message})", e);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }

        if (castTo is { } target && target != tensor.dtype && tensor.is_floating_point())
            tensor = Replace(tensor, tensor.to(target));
        if (device is not null && device.type != DeviceType.CPU)
            tensor = Replace(tensor, tensor.to(device));
        return tensor;
    }

    private static Tensor Replace(Tensor old, Tensor replacement)
    {
        old.Dispose();
        return replacement;
    }

    // ---------------------------------------------------------------- writing

    /// <summary>
    /// Writes the tensors (any device/layout; a contiguous CPU copy is made per tensor when needed) to a temporary file
    /// beside <paramref name="path"/> and renames it over, so readers never see half a file.
    /// Layout follows the reference implementation: compact JSON header padded with spaces so that the data section
    /// starts at a multiple of 8; data ordered by element size (largest first) then name, so every tensor stays aligned.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name) || name == MetadataKey)
                throw new XrayVLException($"{path}: '{name}' is not a valid tensor name for safetensors");
            if (!DTypes.Any(d => d.Type == tensor.dtype))
                throw new XrayVLException($"{path}: tensor '{name}' has dtype {tensor.dtype}, which XrayVL cannot store in safetensors");
        }
        var entries = tensors
            .Select(kv => (Name: kv.Key, Tensor: kv.Value, Type: kv.Value.dtype))
            .OrderByDescending(e => ElementSize(e.Type)).ThenBy(e => e.Name, StringComparer.Ordinal)
            .ToList();

        byte[] header = BuildHeader(entries.Select(e => (e.Name, e.Type, e.Tensor.shape)).ToList(), metadata);

        AtomicFile.Write(path, stream =>
        {
            WriteHeader(stream, header);
            foreach (var (_, tensor, _) in entries)
                WriteTensorBytes(stream, tensor);
        });
    }

    /// <summary>
    /// Writes a file whose tensors are produced one at a time: the header is built from <paramref name="layout"/> (name,
    /// dtype, shape), then <paramref name="produce"/> is called for each name in file order and its tensor written and
    /// disposed before the next — so a file larger than memory can be converted from another format (an import reading
    /// a 14 GB PyTorch checkpoint holds one tensor at a time, never the whole model). Same layout and atomic rename as
    /// <see cref="Save"/>; a produced tensor whose dtype or shape differs from its layout entry is an error.
    /// </summary>
    public static void SaveStreamed(string path, IReadOnlyList<(string Name, ScalarType Type, long[] Shape)> layout,
        Func<string, Tensor> produce, IReadOnlyDictionary<string, string>? metadata = null, Action<string>? written = null)
    {
        foreach (var (name, type, _) in layout)
        {
            if (string.IsNullOrEmpty(name) || name == MetadataKey)
                throw new XrayVLException($"{path}: '{name}' is not a valid tensor name for safetensors");
            if (!DTypes.Any(d => d.Type == type))
                throw new XrayVLException($"{path}: tensor '{name}' has dtype {type}, which XrayVL cannot store in safetensors");
        }
        var entries = layout.OrderByDescending(e => ElementSize(e.Type)).ThenBy(e => e.Name, StringComparer.Ordinal).ToList();
        byte[] header = BuildHeader(entries, metadata);
        AtomicFile.Write(path, stream =>
        {
            WriteHeader(stream, header);
            foreach (var (name, type, shape) in entries)
            {
                using var tensor = produce(name);
                // The producer announced this layout itself: a different tensor is XrayVL's own mistake.
                if (tensor.dtype != type || !tensor.shape.SequenceEqual(shape))
                    throw new XrayVLBugException($"{path}: tensor '{name}' came as {tensor.dtype} ({string.Join(", ", tensor.shape)}), " +
                                                 $"not the announced {type} ({string.Join(", ", shape)})");
                WriteTensorBytes(stream, tensor);
                written?.Invoke(name);
            }
        });
    }

    /// <summary>The header of tensors laid out back to back in <paramref name="entries"/>' order.</summary>
    private static byte[] BuildHeader(List<(string Name, ScalarType Type, long[] Shape)> entries,
        IReadOnlyDictionary<string, string>? metadata)
    {
        long offset = 0;
        var placed = new List<(string, ScalarType, long[], long, long)>(entries.Count);
        foreach (var (name, type, shape) in entries)
        {
            long bytes = shape.Aggregate(1L, (n, d) => n * d) * ElementSize(type);
            placed.Add((name, type, shape, offset, offset + bytes));
            offset += bytes;
        }
        return BuildHeader(placed, metadata);
    }

    /// <summary>
    /// The JSON header of every writer: metadata (keys sorted), then each tensor's dtype, shape and data offsets (relative
    /// to the data section), compact, padded with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
    /// </summary>
    internal static byte[] BuildHeader(IReadOnlyList<(string Name, ScalarType Type, long[] Shape, long Begin, long End)> entries,
        IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = Json.Options.Encoder }))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    json.WriteString(key, value);
                json.WriteEndObject();
            }
            foreach (var (name, type, shape, begin, end) in entries)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", DTypeNameOf(type));
                json.WriteStartArray("shape");
                foreach (long d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(begin);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    /// <summary>The file's start: the header's length (8 bytes, little-endian), then the header.</summary>
    internal static void WriteHeader(Stream stream, byte[] header)
    {
        Span<byte> length = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
    }

    /// <summary>A tensor's bytes (a contiguous CPU copy when needed), written in chunks so no second full copy is made.</summary>
    internal static void WriteTensorBytes(Stream stream, Tensor tensor)
    {
        using var scope = torch.NewDisposeScope();
        var flat = tensor.detach().cpu().contiguous().view(-1);
        long elementSize = ElementSize(flat.dtype);
        long elementsPerChunk = ChunkBytes / elementSize;
        long total = flat.numel();
        for (long first = 0; first < total; first += elementsPerChunk)
            stream.Write(flat.narrow(0, first, Math.Min(elementsPerChunk, total - first)).bytes);
    }
}
