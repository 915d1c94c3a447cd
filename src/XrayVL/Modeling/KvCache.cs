using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Keys and values of the positions already seen, per layer, preallocated to a capacity: (B, Hkv, capacity, hd).
/// A forward writes its T new positions at [Length, Length + T) and attends over [0, Length + T); nothing is reallocated
/// per token. The cache owns its tensors (they live outside any dispose scope): dispose it when the generation ends.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] keys;     // per layer (B, Hkv, capacity, hd)
    private readonly Tensor[] values;   // per layer (B, Hkv, capacity, hd)
    private bool disposed;

    public int Layers => keys.Length;
    public int Batch { get; private set; }
    public int Capacity { get; }
    /// <summary>Positions stored so far (the same for every layer between forwards).</summary>
    public int Length { get; private set; }

    public KvCache(int layers, int batch, int kvHeads, int headSize, int capacity, ScalarType dtype, Device device)
    {
        if (layers <= 0 || batch <= 0 || capacity <= 0)
            throw new XrayVLBugException($"KV cache needs positive layers, batch and capacity, got {layers}, {batch}, {capacity}");
        Batch = batch;
        Capacity = capacity;
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            keys[i] = torch.zeros([batch, kvHeads, capacity, headSize], dtype, device).DetachFromDisposeScope();
            values[i] = torch.zeros([batch, kvHeads, capacity, headSize], dtype, device).DetachFromDisposeScope();
        }
    }

    /// <summary>
    /// Stores a layer's new keys/values (B, Hkv, T, hd) after the current <see cref="Length"/> and returns views of all
    /// stored positions (B, Hkv, Length + T, hd). <see cref="Advance"/> moves Length once every layer has appended.
    /// </summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor newKeys, Tensor newValues)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        long length = newKeys.shape[2];
        if (Length + length > Capacity)
            throw new XrayVLBugException($"KV cache is full: {Length} + {length} positions exceed its capacity of {Capacity}");
        using (torch.no_grad())
        {
            keys[layer].narrow(2, Length, length).copy_(newKeys);
            values[layer].narrow(2, Length, length).copy_(newValues);
        }
        return (keys[layer].narrow(2, 0, Length + length), values[layer].narrow(2, 0, Length + length));
    }

    /// <summary>Marks <paramref name="positions"/> more positions as stored (called by the model after all layers).</summary>
    internal void Advance(int positions) => Length += positions;

    /// <summary>
    /// Row r of the cache becomes old row <paramref name="rowIndices"/>[r] (int64, on the cache's device): beam search
    /// keeps the histories of the surviving beams. The number of rows may change (e.g. one prompt row → k beams).
    /// </summary>
    public void Reorder(Tensor rowIndices)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (rowIndices.dim() != 1) throw new XrayVLBugException("KV cache reorder needs a 1-D index tensor");
        int rows = (int)rowIndices.shape[0];
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = Select(keys[i], rowIndices, rows);
            values[i] = Select(values[i], rowIndices, rows);
        }
        Batch = rows;
    }

    /// <summary>
    /// A new cache of <paramref name="rows"/>.Count rows: row i holds the last <c>Count</c> stored positions of row
    /// <c>Row</c> of <c>Source</c>, right-aligned to end at <paramref name="length"/> (the slots before are left padding,
    /// which the caller masks). Continuous batching uses it to join prompts prefilled apart and to drop finished rows:
    /// stored keys are already rotated by their token positions, so moving them to other slots changes nothing.
    /// </summary>
    public static KvCache Gather(IReadOnlyList<(KvCache Source, int Row, int Count)> rows, int length, int capacity)
    {
        if (rows.Count == 0) throw new XrayVLBugException("KV cache gather needs at least one row");
        var first = rows[0].Source;
        foreach (var (source, row, count) in rows)
        {
            ObjectDisposedException.ThrowIf(source.disposed, source);
            if (source.Layers != first.Layers || row < 0 || row >= source.Batch || count < 0 || count > source.Length || count > length)
                throw new XrayVLBugException($"KV cache gather: row {row} with {count} positions does not fit (source rows {source.Batch}, length {source.Length}, target length {length})");
        }
        if (length > capacity) throw new XrayVLBugException($"KV cache gather: length {length} exceeds capacity {capacity}");
        var shape = first.keys[0].shape;                                                    // (B, Hkv, capacity, hd)
        var target = new KvCache(first.Layers, rows.Count, (int)shape[1], (int)shape[3], capacity, first.keys[0].dtype, first.keys[0].device);
        using (var scope = NewDisposeScope())
        using (torch.no_grad())
        {
            for (int layer = 0; layer < first.Layers; layer++)
                for (int i = 0; i < rows.Count; i++)
                {
                    var (source, row, count) = rows[i];
                    if (count == 0) continue;
                    target.keys[layer][i].narrow(1, length - count, count).copy_(source.keys[layer][row].narrow(1, source.Length - count, count));
                    target.values[layer][i].narrow(1, length - count, count).copy_(source.values[layer][row].narrow(1, source.Length - count, count));
                }
        }
        target.Length = length;
        return target;
    }

    private Tensor Select(Tensor store, Tensor rowIndices, int rows)
    {
        var selected = store.narrow(2, 0, Length).index_select(0, rowIndices);             // (rows, Hkv, Length, hd)
        var target = store;
        if (rows != Batch)
        {
            target = torch.zeros([rows, store.shape[1], Capacity, store.shape[3]], store.dtype, store.device).DetachFromDisposeScope();
            store.Dispose();
        }
        target.narrow(2, 0, Length).copy_(selected);
        return target;
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
