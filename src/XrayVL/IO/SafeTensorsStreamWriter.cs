using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// Writes a safetensors file one tensor at a time, for conversions of models larger than memory: each tensor's bytes go
/// to a data file beside the target as soon as it is added (so it can be disposed at once); <see cref="Commit"/> then
/// writes the header (known only when every tensor has been seen) followed by the data, and renames the result over
/// <c>path</c>. Memory stays at one tensor; disk needs the file's size twice until the commit ends.
/// Data lies in the order tensors were added (the format allows any order). Use it when tensors come from a transform
/// whose output layout is known only as it runs (the XrayGLM import: LoRA merged into some layers changes their dtype);
/// when the layout is known first, <see cref="SafeTensors.SaveStreamed"/> writes in place without the side file.
/// The header and tensor bytes are written by <see cref="SafeTensors"/>' own code, as every writer's.
/// </summary>
public sealed class SafeTensorsStreamWriter : IDisposable
{
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

    /// <summary>Appends the tensor's bytes (a contiguous CPU copy is made when needed, in chunks of 16 MB at most).</summary>
    public void Add(string name, Tensor tensor)
    {
        if (committed) throw new InvalidOperationException("the file is already committed");
        if (string.IsNullOrEmpty(name) || name == SafeTensors.MetadataKey || !names.Add(name))
            throw new XrayVLException($"{path}: tensor name '{name}' is empty, reserved or repeated");
        SafeTensors.DTypeNameOf(tensor.dtype);   // refuses a dtype safetensors cannot hold before anything is written
        long begin = data.Length;
        SafeTensors.WriteTensorBytes(data, tensor);
        entries.Add((name, tensor.dtype, tensor.shape, begin, data.Length));
    }

    /// <summary>Writes header + data whole or not at all (<see cref="AtomicFile"/>), then removes the data file.</summary>
    public void Commit(IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (committed) throw new InvalidOperationException("the file is already committed");
        byte[] header = SafeTensors.BuildHeader(entries, metadata);
        AtomicFile.Write(path, output =>
        {
            SafeTensors.WriteHeader(output, header);
            data.Flush();
            data.Position = 0;
            data.CopyTo(output, 1 << 20);
        });
        committed = true;
        Dispose();
    }

    /// <summary>Removes the data file; an uncommitted target is left as it was.</summary>
    public void Dispose()
    {
        data.Dispose();
        if (File.Exists(dataPath)) File.Delete(dataPath);
    }
}
