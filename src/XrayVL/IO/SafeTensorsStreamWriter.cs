using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// Writes a safetensors file one tensor at a time, for conversions of models larger than memory: each tensor's bytes go
/// to a data file beside the target as soon as it is added (so it can be disposed at once); <see cref="Commit"/> then
/// writes the header (known only when every tensor has been seen) followed by the data, and renames the result over
/// <c>path</c>. Memory stays at one tensor; disk needs the file's size twice until the commit ends.
/// Data lies in the order tensors were added (the format allows any order); the header is padded to 8 bytes as the
/// reference writer pads it.
/// </summary>
public sealed class SafeTensorsStreamWriter : IDisposable
{
    private const long ChunkBytes = 64L << 20;
    private readonly string path, dataPath;
    private readonly FileStream data;
    private readonly List<(string Name, ScalarType Type, long[] Shape, long Begin, long End)> entries = [];
    private readonly HashSet<string> names = new(StringComparer.Ordinal);
    private bool committed;

    public SafeTensorsStreamWriter(string path)
    {
        this.path = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(this.path)!);
        dataPath = $"{this.path}.data-{Environment.ProcessId}-{Guid.NewGuid():N}";
        data = new FileStream(dataPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 1 << 20);
    }

    /// <summary>Bytes of tensor data written so far.</summary>
    public long DataBytes => data.Length;

    public int Count => entries.Count;

    /// <summary>Appends the tensor's bytes (a contiguous CPU copy is made when needed, in chunks of 64 MB at most).</summary>
    public void Add(string name, Tensor tensor)
    {
        if (committed) throw new InvalidOperationException("the file is already committed");
        if (string.IsNullOrEmpty(name) || name == "__metadata__" || !names.Add(name))
            throw new XrayVLException($"{path}: tensor name '{name}' is empty, reserved or repeated");
        SafeTensors.DTypeNameOf(tensor.dtype);   // refuses a dtype safetensors cannot hold before anything is written
        long begin = data.Length;
        using (var scope = torch.NewDisposeScope())
        {
            var flat = tensor.detach().cpu().contiguous().view(-1);
            long elementsPerChunk = ChunkBytes / SafeTensors.ElementSize(flat.dtype), total = flat.numel();
            for (long first = 0; first < total; first += elementsPerChunk)
                data.Write(flat.narrow(0, first, Math.Min(elementsPerChunk, total - first)).bytes);
        }
        entries.Add((name, tensor.dtype, tensor.shape, begin, data.Length));
    }

    /// <summary>Writes header + data whole or not at all (<see cref="AtomicFile"/>), then removes the data file.</summary>
    public void Commit(IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (committed) throw new InvalidOperationException("the file is already committed");
        byte[] header = Header(metadata);
        AtomicFile.Write(path, output =>
        {
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            output.Write(length);
            output.Write(header);
            data.Flush();
            data.Position = 0;
            data.CopyTo(output, 1 << 20);
        });
        committed = true;
        Dispose();
    }

    private byte[] Header(IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            foreach (var (name, type, shape, begin, end) in entries)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", SafeTensors.DTypeNameOf(type));
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

    /// <summary>Removes the data file; an uncommitted target is left as it was.</summary>
    public void Dispose()
    {
        data.Dispose();
        if (File.Exists(dataPath)) File.Delete(dataPath);
    }
}
