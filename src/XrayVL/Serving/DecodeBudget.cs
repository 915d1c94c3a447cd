using System.Runtime;
using XrayVL.Imaging;

namespace XrayVL.Serving;

/// <summary>
/// Bounds the memory that image decoding holds at once across concurrent requests: a semaphore counted in bytes.
/// Each decode reserves <see cref="EstimateBytes"/> of its image (read from the header, before any pixel is decoded) and
/// waits, first come first served, while the reservations of the decodes running would exceed <see cref="CapacityBytes"/>.
/// An image larger than the whole budget is decoded alone (it passes the image limits, so it is served, one at a time).
/// A decode's full-resolution buffers are garbage once it ends: after a large one the collector runs before the next is
/// admitted (so garbage does not pile up under the next decode), and when the last decode ends the freed memory is given
/// back to the operating system (without this the process keeps it).
/// </summary>
public sealed class DecodeBudget
{
    /// <summary>1 GiB: one 50-megapixel 16-bit RGBA PNG (about 0.6 GiB) at a time, or several ordinary radiographs.</summary>
    public const long DefaultCapacityBytes = 1L << 30;
    /// <summary>Memory is given back after 64 MiB of decodes: smaller ones leave too little to be worth a full collection.</summary>
    public const long DefaultReturnAfterBytes = 64L << 20;

    private readonly object gate = new();
    private readonly LinkedList<(long Bytes, TaskCompletionSource Granted)> waiting = new();
    private readonly long returnAfterBytes;
    private long inUse, peak, releasedSinceReturn, returns;

    public DecodeBudget(long capacityBytes = DefaultCapacityBytes, long returnAfterBytes = DefaultReturnAfterBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacityBytes);
        CapacityBytes = capacityBytes;
        this.returnAfterBytes = returnAfterBytes;
    }

    public long CapacityBytes { get; }

    /// <summary>Bytes reserved by the decodes running now.</summary>
    public long InUseBytes { get { lock (gate) return inUse; } }

    /// <summary>The most bytes ever reserved at once (at most <see cref="CapacityBytes"/>, or one image larger than it alone).</summary>
    public long PeakBytes { get { lock (gate) return peak; } }

    /// <summary>Decodes waiting for room.</summary>
    public int Waiting { get { lock (gate) return waiting.Count; } }

    /// <summary>How often freed memory was given back to the operating system.</summary>
    public long MemoryReturns { get { lock (gate) return returns; } }

    /// <summary>
    /// Runs <paramref name="work"/> (a decode and whatever makes its result small) once <paramref name="bytes"/> are free.
    /// What <paramref name="work"/> returns should be small: everything else it allocated is garbage when it returns.
    /// </summary>
    public async Task<T> RunAsync<T>(long bytes, Func<T> work, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        await AcquireAsync(bytes, cancellationToken);
        try
        {
            return work();
        }
        finally
        {
            // work's frame has returned: its full-resolution buffers are unreachable, so a collection frees them.
            Release(bytes);
        }
    }

    private Task AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        LinkedListNode<(long, TaskCompletionSource)> node;
        lock (gate)
        {
            if (waiting.Count == 0 && Fits(bytes))
            {
                Take(bytes);
                return Task.CompletedTask;
            }
            node = waiting.AddLast((bytes, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)));
        }
        if (cancellationToken.CanBeCanceled)
        {
            var registration = cancellationToken.Register(() =>
            {
                lock (gate)
                {
                    if (node.List is null) return;                 // granted meanwhile: the caller releases as usual
                    waiting.Remove(node);
                    GrantWaiting();                                 // a large waiter leaving may let smaller ones in
                }
                node.Value.Item2.TrySetCanceled(cancellationToken);
            });
            node.Value.Item2.Task.ContinueWith(_ => registration.Dispose(), TaskScheduler.Default);
        }
        return node.Value.Item2.Task;
    }

    /// <summary>
    /// Frees the bytes and admits waiters in order. After a large decode the collector runs before the next decode is
    /// admitted: left to itself it lets one decode's garbage pile up under the next one's buffers (measured: four 0.6 GB
    /// decodes one after another peaked at 2.6 GB of RSS), so the budget would bound reservations but not memory.
    /// When the last decode ends, the freed memory is also given back to the operating system.
    /// </summary>
    private void Release(long bytes)
    {
        bool large = bytes >= returnAfterBytes, last;
        lock (gate)
        {
            inUse -= bytes;
            releasedSinceReturn += bytes;
            if (!large) GrantWaiting();
            last = inUse == 0 && waiting.Count == 0 && releasedSinceReturn >= returnAfterBytes;
            if (last)
            {
                releasedSinceReturn = 0;
                returns++;
            }
        }
        if (last) ReturnMemory();
        else if (large) GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
        if (large)
            lock (gate) GrantWaiting();
    }

    private void GrantWaiting()
    {
        // First come, first served: a large image at the head is not overtaken by smaller ones behind it.
        while (waiting.First is { } head && Fits(head.Value.Bytes))
        {
            waiting.RemoveFirst();
            Take(head.Value.Bytes);
            head.Value.Granted.TrySetResult();
        }
    }

    private bool Fits(long bytes) => inUse == 0 || inUse + bytes <= CapacityBytes;

    private void Take(long bytes)
    {
        inUse += bytes;
        peak = Math.Max(peak, inUse);
    }

    /// <summary>A compacting collection that also decommits the freed heap (GCCollectionMode.Aggressive).</summary>
    private static void ReturnMemory()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>
    /// An upper bound of the bytes decoding <paramref name="bytes"/> and bringing it to the model's square allocates,
    /// from the header alone: the decoder's samples at the file's depth and its gray float image, the square padding
    /// (a full-size copy when the image is not square) and the resizes' intermediate rows. Bytes that are not a
    /// readable PNG, JPEG or DICOM header cost their own size (the decoder refuses them before allocating).
    /// </summary>
    public static long EstimateBytes(ReadOnlySpan<byte> bytes)
    {
        long width, height, sampleBytes;
        try
        {
            switch (ImageFile.Sniff(bytes))
            {
                case ImageFormat.Png:
                    var png = Png.ReadHeader(bytes, "image");
                    (width, height) = (png.Width, png.Height);
                    sampleBytes = (png.BitsPerPixel + 7) / 8;
                    break;
                case ImageFormat.Jpeg:
                    if (Jpeg.ReadSize(bytes) is not { } size) return bytes.Length;
                    (width, height) = size;
                    sampleBytes = 12;   // up to 3 components: 16-bit samples, and a progressive file's 16-bit coefficients
                    break;
                case ImageFormat.Dicom:
                    var dicom = Dicom.ReadDataset(bytes, "image");
                    (width, height) = (dicom.Columns, dicom.Rows);
                    sampleBytes = 4 * Math.Max(1, dicom.SamplesPerPixel);   // stored values as int, per sample
                    break;
                default:
                    return bytes.Length;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return bytes.Length;
        }
        if (width <= 0 || height <= 0) return bytes.Length;
        long side = Math.Max(width, height);
        long pixels = width * height;
        return pixels * (sampleBytes + 4)                         // the decoder's samples + the gray float image
            + height                                              // PNG filter bytes
            + (width == height ? 0 : side * side * 4)             // padded to a square at full size
            + side * 1024 * 4 * 2                                 // resize intermediates: full height × ≤ 1024 columns, twice
            + bytes.Length + (1 << 20);
    }
}
