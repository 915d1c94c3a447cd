using System.IO.Compression;
using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// PyTorch checkpoint files (<c>.pth</c>, <c>.pt</c>, <c>.bin</c>) as <c>torch.save</c> writes them, read without executing
/// anything (see <see cref="TorchPickle"/>): the zip format of torch ≥ 1.6 and the legacy stream format before it.
/// </summary>
/// <remarks>
/// Zip format: members <c>&lt;stem&gt;/data.pkl</c> (the object pickle), <c>&lt;stem&gt;/data/&lt;key&gt;</c> (one raw
/// little-endian storage each), <c>&lt;stem&gt;/version</c>, optionally <c>&lt;stem&gt;/byteorder</c>.
/// Legacy format: five pickles in a row — magic number, protocol version 1001, system info, the object, the sorted list of
/// storage keys — then each storage in that order as an int64 element count followed by its raw bytes.
/// <para>
/// <see cref="Open"/> reads only the pickle; storages are read on demand, each straight from the file into the buffer of
/// one tensor (no intermediate copy), and tensors are strided views of their storage, so shared storages stay shared and a
/// file needs about its own size in memory, never twice that.
/// </para>
/// </remarks>
public sealed class TorchCheckpoint : IDisposable
{
    /// <summary>First pickle of the legacy format.</summary>
    public static readonly BigInteger LegacyMagic = BigInteger.Parse("119547037146038801333356");

    public const long LegacyProtocolVersion = 1001;

    private readonly FileStream stream;
    private readonly ZipArchive? zip;
    private readonly string zipPrefix = "";
    private readonly Dictionary<string, long> legacyDataOffsets = [];
    private readonly Dictionary<string, TorchStorageInfo> storages;

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>"zip" (torch ≥ 1.6) or "legacy".</summary>
    public string Format => zip is null ? "legacy" : "zip";

    /// <summary>The saved object with tensors as <see cref="TorchTensorInfo"/> (no data read yet).</summary>
    public object? Root { get; }

    /// <summary>Every storage record of the file, by key.</summary>
    public IReadOnlyDictionary<string, TorchStorageInfo> Storages => storages;

    private TorchCheckpoint(string path, FileStream stream, ZipArchive? zip, string zipPrefix, object? root,
        Dictionary<string, TorchStorageInfo> storages, Dictionary<string, long> legacyDataOffsets)
    {
        Path = path;
        this.stream = stream;
        this.zip = zip;
        this.zipPrefix = zipPrefix;
        Root = root;
        this.storages = storages;
        this.legacyDataOffsets = legacyDataOffsets;
    }

    public void Dispose()
    {
        zip?.Dispose();
        stream.Dispose();
    }

    // ---------------------------------------------------------------- opening

    /// <summary>Reads the file's pickle (and, for the legacy format, where each storage lies); no tensor data is read.</summary>
    public static TorchCheckpoint Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new XrayVLException($"{path}: cannot open PyTorch checkpoint ({e.Message})", e);
        }
        try
        {
            Span<byte> head = stackalloc byte[4];
            int read = stream.ReadAtLeast(head, 4, throwOnEndOfStream: false);
            stream.Position = 0;
            if (read >= 2 && head[0] == 'P' && head[1] == 'K') return OpenZip(path, stream);
            if (read >= 1 && head[0] == 0x80) return OpenLegacy(path, stream);
            if (IsTar(stream)) throw new XrayVLException($"{path}: tar-format PyTorch checkpoint (torch before 0.4) is not supported; re-save it with a newer torch");
            throw new XrayVLException($"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle stream)");
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static bool IsTar(FileStream stream)
    {
        if (stream.Length < 262) return false;
        Span<byte> magic = stackalloc byte[5];
        stream.Position = 257;
        stream.ReadExactly(magic);
        stream.Position = 0;
        return magic.SequenceEqual("ustar"u8);
    }

    private static TorchCheckpoint OpenZip(string path, FileStream stream)
    {
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException e)
        {
            throw new XrayVLException($"{path}: truncated or corrupt PyTorch zip checkpoint ({OneLine(e.Message)})", e);
        }
        try
        {
            // The archive folder is the file's stem at save time; a renamed file keeps the old one, so find it.
            var pickles = zip.Entries.Where(e => e.FullName == "data.pkl" || (e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)
                                                                              && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length))
                .ToList();
            if (pickles.Count != 1)
                throw new XrayVLException($"{path}: zip archive with {(pickles.Count == 0 ? "no" : "several")} data.pkl: not a PyTorch checkpoint");
            string prefix = pickles[0].FullName[..^"data.pkl".Length];
            if (zip.GetEntry(prefix + "byteorder") is { } order)
            {
                string text = ReadEntryText(path, order).Trim();
                if (text != "little") throw new XrayVLException($"{path}: storages are saved {text}-endian; only little-endian files are read");
            }
            byte[] pickle = ReadEntryBytes(path, pickles[0]);
            var storages = new Dictionary<string, TorchStorageInfo>();
            object? root = TorchPickle.Load(pickle, $"{path} ({pickles[0].FullName})", storages);
            foreach (var storage in storages.Values)
            {
                var entry = zip.GetEntry($"{prefix}data/{storage.Key}")
                            ?? throw new XrayVLException($"{path}: storage '{storage.Key}' is missing from the archive (truncated or corrupt file?)");
                if (entry.Length != storage.ByteLength)
                    throw new XrayVLException($"{path}: storage '{storage.Key}' holds {entry.Length} bytes but {storage.ElementCount} × " +
                                              $"{storage.DType} needs {storage.ByteLength}");
            }
            return new TorchCheckpoint(path, stream, zip, prefix, root, storages, []);
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    private static byte[] ReadEntryBytes(string path, ZipArchiveEntry entry)
    {
        if (entry.Length > int.MaxValue) throw new XrayVLException($"{path}: {entry.FullName} of {entry.Length} bytes is too large");
        var bytes = new byte[entry.Length];
        try
        {
            using var s = entry.Open();
            s.ReadExactly(bytes);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
        {
            throw new XrayVLException($"{path}: cannot read {entry.FullName}: truncated or corrupt zip ({OneLine(e.Message)})", e);
        }
        return bytes;
    }

    private static string ReadEntryText(string path, ZipArchiveEntry entry) => System.Text.Encoding.UTF8.GetString(ReadEntryBytes(path, entry));

    private static TorchCheckpoint OpenLegacy(string path, FileStream stream)
    {
        var none = new Dictionary<string, TorchStorageInfo>();
        if (TorchPickle.Load(stream, path, none) is not BigInteger magic || magic != LegacyMagic)
            throw new XrayVLException($"{path}: a pickle file, but not a PyTorch checkpoint (wrong magic number)");
        if (TorchPickle.Load(stream, path, none) is not long protocol || protocol != LegacyProtocolVersion)
            throw new XrayVLException($"{path}: unsupported legacy checkpoint protocol version (expected {LegacyProtocolVersion})");
        if (TorchPickle.Load(stream, path, none) is not PickleDict sysInfo)
            throw new XrayVLException($"{path}: malformed legacy checkpoint (no system info)");
        if (sysInfo.TryGetValue("little_endian", out var little) && little is false)
            throw new XrayVLException($"{path}: saved on a big-endian machine; only little-endian files are read");

        var storages = new Dictionary<string, TorchStorageInfo>();
        object? root = TorchPickle.Load(stream, path, storages);
        if (TorchPickle.Load(stream, path, none) is not List<object?> keys || keys.Any(k => k is not string))
            throw new XrayVLException($"{path}: malformed legacy checkpoint (no storage key list)");

        // Storages follow in key-list order, each an int64 element count then its bytes.
        var offsets = new Dictionary<string, long>();
        long position = stream.Position;
        Span<byte> count = stackalloc byte[8];
        foreach (string key in keys.Cast<string>())
        {
            if (!storages.TryGetValue(key, out var storage))
                throw new XrayVLException($"{path}: storage '{key}' is listed but no tensor uses it");
            if (position + 8 > stream.Length) throw new XrayVLException($"{path}: truncated legacy checkpoint: storage '{key}' is missing");
            stream.Position = position;
            stream.ReadExactly(count);
            long numel = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(count);
            if (numel != storage.ElementCount)
                throw new XrayVLException($"{path}: storage '{key}' holds {numel} elements but the pickle says {storage.ElementCount}");
            offsets[key] = position + 8;
            position += 8 + storage.ByteLength;
            if (position > stream.Length) throw new XrayVLException($"{path}: truncated legacy checkpoint: storage '{key}' ends early");
        }
        foreach (string key in storages.Keys.Where(k => !offsets.ContainsKey(k)))
            throw new XrayVLException($"{path}: storage '{key}' is used but not stored");
        return new TorchCheckpoint(path, stream, zip: null, zipPrefix: "", root, storages, offsets);
    }

    // ---------------------------------------------------------------- storages and tensors

    /// <summary>Reads one storage into a new 1-D CPU tensor of its dtype and element count.</summary>
    public Tensor ReadStorage(TorchStorageInfo storage)
    {
        if (!storages.TryGetValue(storage.Key, out var own) || !ReferenceEquals(own, storage))
            throw new ArgumentException($"storage '{storage.Key}' does not belong to {Path}", nameof(storage));
        var tensor = torch.empty([storage.ElementCount], storage.DType, torch.CPU);
        try
        {
            if (zip is not null)
            {
                var entry = zip.GetEntry($"{zipPrefix}data/{storage.Key}")!;
                using var source = entry.Open();
                Fill(tensor, source, storage);
            }
            else
            {
                stream.Position = legacyDataOffsets[storage.Key];
                Fill(tensor, stream, storage);
            }
            return tensor;
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            tensor.Dispose();
            throw new XrayVLException($"{Path}: cannot read storage '{storage.Key}': truncated or corrupt file ({OneLine(e.Message)})", e);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private void Fill(Tensor tensor, Stream source, TorchStorageInfo storage)
    {
        if (!SafeTensors.ReadInto(tensor, source, storage.ElementCount, TorchPickle.ElementSize(storage.DType)))
            throw new XrayVLException($"{Path}: truncated checkpoint: storage '{storage.Key}' ends early");
    }

    /// <summary>The tensor <paramref name="info"/> describes as a view of <paramref name="storage"/> (its 1-D storage tensor).</summary>
    public static Tensor View(Tensor storage, TorchTensorInfo info) =>
        storage.as_strided(info.Shape, info.Stride, info.StorageOffset);

    /// <summary>Reads one tensor (its whole storage, then the view; the storage memory lives as long as the view).</summary>
    public Tensor ReadTensor(TorchTensorInfo info, ScalarType? castTo = null)
    {
        using var storage = ReadStorage(info.Storage);
        return Cast(View(storage, info), castTo);
    }

    private static Tensor Cast(Tensor tensor, ScalarType? castTo)
    {
        if (castTo is not { } target || target == tensor.dtype || !tensor.is_floating_point()) return tensor;
        var cast = tensor.to(target);
        tensor.Dispose();
        return cast;
    }

    /// <summary>
    /// The saved object with every tensor read: the same containers as <see cref="Root"/>, tensors as TorchSharp tensors
    /// viewing their storages (tensors that share a storage in the file share memory here), floating-point ones cast to
    /// <paramref name="castTo"/> when given (a cast tensor no longer shares memory).
    /// </summary>
    public object? Materialize(ScalarType? castTo = null)
    {
        var read = new Dictionary<TorchStorageInfo, Tensor>(ReferenceEqualityComparer.Instance);
        try
        {
            return Map(Root, 0, info =>
            {
                if (!read.TryGetValue(info.Storage, out var storage)) read[info.Storage] = storage = ReadStorage(info.Storage);
                return Cast(View(storage, info), castTo);
            });
        }
        finally
        {
            // The views hold the memory; the storage handles themselves are no longer needed.
            foreach (var storage in read.Values) storage.Dispose();
        }
    }

    private object? Map(object? node, int depth, Func<TorchTensorInfo, Tensor> read)
    {
        if (depth > TorchPickle.MaxDepth) throw new XrayVLException($"{Path}: containers nested deeper than {TorchPickle.MaxDepth} levels");
        switch (node)
        {
            case TorchTensorInfo info:
                return read(info);
            case List<object?> list:
                return list.Select(item => Map(item, depth + 1, read)).ToList();
            case object?[] tuple:
                return tuple.Select(item => Map(item, depth + 1, read)).ToArray();
            case PickleDict dict:
                var copy = new PickleDict(dict.IsOrdered) { Attributes = dict.Attributes };
                foreach (var (key, value) in dict) copy[key] = Map(value, depth + 1, read);
                return copy;
            default:
                return node;
        }
    }

    /// <summary>
    /// The state dict (name → tensor) at the root, or at <c>root[<paramref name="key"/>]</c> for files such as
    /// <c>{"model": state_dict, "optimizer": ...}</c> or DeepSpeed's <c>{"module": state_dict, ...}</c>.
    /// Every value must be a tensor; the message names the first that is not.
    /// </summary>
    public IReadOnlyList<(string Name, TorchTensorInfo Tensor)> StateDictEntries(string? key = null)
    {
        object? node = Root;
        if (key is not null)
        {
            if (Root is not PickleDict top || !top.TryGetValue(key, out node))
                throw new XrayVLException($"{Path}: no '{key}' at the top level ({DescribeTop()})");
        }
        if (node is not PickleDict dict)
            throw new XrayVLException($"{Path}: {(key is null ? "the saved object" : $"'{key}'")} is a {TorchPickle.KindOf(node)}, not a state dict");
        var entries = new List<(string, TorchTensorInfo)>(dict.Count);
        foreach (var (name, value) in dict)
        {
            if (name is not string text || value is not TorchTensorInfo info)
                throw new XrayVLException($"{Path}: {(key is null ? "" : $"'{key}' ")}is not a state dict: entry '{name}' is a {TorchPickle.KindOf(value)}" +
                                          (key is null ? $" ({DescribeTop()})" : ""));
            entries.Add((text, info));
        }
        return entries;
    }

    private string DescribeTop() => Root is PickleDict top
        ? "top-level keys: " + string.Join(", ", top.Keys.Take(10).Select(k => k.ToString())) + (top.Count > 10 ? ", ..." : "")
        : $"the saved object is a {TorchPickle.KindOf(Root)}";

    /// <summary>
    /// The state dict's tensors one at a time, in file order, so a caller can convert or place each before the next is
    /// read. A storage shared by several tensors is read once and kept only until its last tensor is handed out.
    /// The caller owns each tensor.
    /// </summary>
    public IEnumerable<(string Name, Tensor Tensor)> ReadStateDict(string? key = null, ScalarType? castTo = null)
    {
        var entries = StateDictEntries(key);
        var uses = new Dictionary<TorchStorageInfo, int>(ReferenceEqualityComparer.Instance);
        foreach (var (_, info) in entries) uses[info.Storage] = uses.GetValueOrDefault(info.Storage) + 1;
        var open = new Dictionary<TorchStorageInfo, Tensor>(ReferenceEqualityComparer.Instance);
        try
        {
            foreach (var (name, info) in entries)
            {
                if (!open.TryGetValue(info.Storage, out var storage)) open[info.Storage] = storage = ReadStorage(info.Storage);
                var tensor = Cast(View(storage, info), castTo);
                if (--uses[info.Storage] == 0)
                {
                    open.Remove(info.Storage);
                    storage.Dispose();
                }
                yield return (name, tensor);
            }
        }
        finally
        {
            foreach (var storage in open.Values) storage.Dispose();
        }
    }

    // ---------------------------------------------------------------- one-call helpers

    /// <summary>Reads the whole saved object (see <see cref="Materialize"/>).</summary>
    public static object? Load(string path, ScalarType? castTo = null)
    {
        using var checkpoint = Open(path);
        return checkpoint.Materialize(castTo);
    }

    /// <summary>Reads a state dict (see <see cref="StateDictEntries"/>) into a dictionary the caller owns.</summary>
    public static Dictionary<string, Tensor> LoadStateDict(string path, string? key = null, ScalarType? castTo = null)
    {
        using var checkpoint = Open(path);
        var result = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (name, tensor) in checkpoint.ReadStateDict(key, castTo)) result[name] = tensor;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
