using System.Buffers.Binary;
using System.IO.Compression;
using System.Net;
using XrayVL.Imaging;
using XrayVL.Server;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Tests.Serving;

/// <summary>
/// Decoding memory is bounded: the budget admits decodes by bytes, first come first served, and the bytes it reserves
/// for an image are at least what decoding it really allocates (measured, never timed).
/// </summary>
public class DecodeBudgetTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Waits (without asserting any time) until the condition holds; fails only if it never does.</summary>
    private static void WaitFor(Func<bool> condition) =>
        Assert.True(SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(30)), "the condition never held");

    [Fact]
    public async Task DecodesWaitWhileTheirBytesDoNotFitAndGoInArrivalOrder()
    {
        var budget = new DecodeBudget(capacityBytes: 1000, returnAfterBytes: long.MaxValue);
        using var holdA = new ManualResetEventSlim();
        var a = Task.Run(() => budget.RunAsync(600, () => { holdA.Wait(); return "a"; }), Ct);
        WaitFor(() => budget.InUseBytes == 600);

        var b = budget.RunAsync(600, () => "b", Ct);              // 600 + 600 > 1000: waits
        var c = budget.RunAsync(100, () => "c", Ct);              // would fit, but b came first
        Assert.False(b.IsCompleted);
        Assert.False(c.IsCompleted);
        Assert.Equal(2, budget.Waiting);

        holdA.Set();
        Assert.Equal(["a", "b", "c"], await Task.WhenAll(a, b, c));
        Assert.Equal(0, budget.InUseBytes);
        Assert.InRange(budget.PeakBytes, 600, 1000);              // never more than the budget at once
    }

    [Fact]
    public async Task AnImageLargerThanTheBudgetIsDecodedAloneAndAWaiterCanLeave()
    {
        var budget = new DecodeBudget(capacityBytes: 100, returnAfterBytes: long.MaxValue);
        Assert.Equal(1, await budget.RunAsync(500, () => 1, Ct)); // alone: admitted whole
        Assert.Equal(500, budget.PeakBytes);

        using var hold = new ManualResetEventSlim();
        var first = Task.Run(() => budget.RunAsync(80, () => { hold.Wait(); return 0; }), Ct);
        WaitFor(() => budget.InUseBytes == 80);
        using var leave = new CancellationTokenSource();
        var leaving = budget.RunAsync(50, () => 2, leave.Token);
        Assert.False(leaving.IsCompleted);
        await leave.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving);
        Assert.Equal(0, budget.Waiting);
        hold.Set();
        await first;
        Assert.Equal(0, budget.InUseBytes);
    }

    [Fact]
    public async Task MemoryIsGivenBackWhenTheLastLargeDecodeEnds()
    {
        var budget = new DecodeBudget(capacityBytes: 1 << 30, returnAfterBytes: 1000);
        await budget.RunAsync(10, () => new byte[10], Ct);
        Assert.Equal(0, budget.MemoryReturns);                    // 10 bytes: not worth a collection
        await budget.RunAsync(5000, () => new byte[5000].Length, Ct);
        Assert.Equal(1, budget.MemoryReturns);
    }

    /// <summary>
    /// A 7000×7000 RGBA 16-bit PNG of flat pixels (about 380 KB: 49 megapixels, under the 50-megapixel limit) written
    /// row by row, so the test never holds its 392 MB of samples.
    /// </summary>
    internal static byte[] BigFlatPng(int side = 7000)
    {
        var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, side);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), side);
        ihdr[8] = 16;                                                  // bit depth
        ihdr[9] = 6;                                                   // RGBA
        PngWriter.WriteChunk(png, "IHDR"u8, ihdr);
        var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            var row = new byte[1 + side * 8];                          // filter byte 0, then 8 bytes per pixel
            for (int x = 0; x < side; x++) row[1 + x * 8] = 0x80;      // mid-gray red, the rest 0: a gray image after luma
            for (int y = 0; y < side; y++) zlib.Write(row);
        }
        PngWriter.WriteChunk(png, "IDAT"u8, compressed.ToArray());
        PngWriter.WriteChunk(png, "IEND"u8, []);
        return png.ToArray();
    }

    /// <summary>Bytes allocated on this thread by <paramref name="work"/>: an upper bound of the managed memory it held
    /// at its peak (everything it held it allocated). The decoders run on the calling thread.</summary>
    private static long Allocated(Action work)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        work();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    /// <summary>
    /// The stated bound for the big PNG: what the server reserves for it (<see cref="DecodeBudget.EstimateBytes"/>),
    /// at most 14 bytes per pixel (its 8 bytes of samples, a 4-byte gray float, and the resizes' rows): about 650 MB.
    /// Native memory of the decode is zlib's inflate state (tens of KB); nothing else is native.
    /// </summary>
    [Fact]
    public void DecodingTheBigPngAllocatesNoMoreThanTheServerReservesForIt()
    {
        byte[] png = BigFlatPng();
        Assert.InRange(png.Length, 100_000, 1_000_000);
        long pixels = 7000L * 7000;
        long reserved = DecodeBudget.EstimateBytes(png);
        Assert.InRange(reserved, pixels * 12, pixels * 14);

        var preprocess = ServingModel.Loaded.Preprocess;
        PageEndpoints.ShrunkImage? kept = null;
        long allocated = Allocated(() => kept = PageEndpoints.Shrink(ImageFile.Decode(png, "big.png"), image => Preprocess.ToModelSquare(image, preprocess)));
        Assert.True(allocated <= reserved, $"decoding allocated {allocated / 1e6:0} MB, the server reserves {reserved / 1e6:0} MB");
        // What the conversation keeps afterwards is small: the model's square and a preview of at most 768 px a side.
        Assert.Equal(preprocess.ImageSize, kept!.ModelImage.Width);
        Assert.Equal((7000, 7000), (kept.Width, kept.Height));
        Assert.Equal(PageEndpoints.PreviewSide, Png.ReadHeader(kept.PreviewPng, "preview").Width);
        Assert.True(kept.PreviewPng.Length < 1 << 20);
        TestContext.Current.SendDiagnosticMessage($"big PNG: {allocated / 1e6:0} MB allocated, {reserved / 1e6:0} MB reserved");
    }

    [Fact]
    public async Task ConcurrentBigUploadsStayWithinTheServersDecodeBudget()
    {
        byte[] png = BigFlatPng();
        long one = DecodeBudget.EstimateBytes(png);
        // Room for one such image at a time: the second waits for the first instead of doubling the peak.
        await using var live = await LiveServer.StartAsync(o => o with { DecodeBudgetBytes = one + one / 2 });
        var uploads = Enumerable.Range(0, 2).Select(_ =>
            live.Client.PostAsync("/api/report", LiveServer.ImageForm(png, "big.png", ("max_tokens", "1")), Ct)).ToList();
        foreach (var response in await Task.WhenAll(uploads)) Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var decodes = live.Server.Decodes;
        Assert.Equal(one, decodes.PeakBytes);
        Assert.Equal(0, decodes.InUseBytes);
        Assert.True(decodes.MemoryReturns >= 1, "the decodes' memory was not given back");
    }
}

/// <summary>
/// Tests whose code forces full garbage collections (the decode budget gives memory back) run alone, after the parallel
/// tests: a full collection finalizes TorchSharp modules nobody references any more, which disposes their parameters,
/// and a test elsewhere that still reads a dropped module's tensors (a state dict) would fail for it.
/// </summary>
[CollectionDefinition(nameof(ForcedGarbageCollections), DisableParallelization = true)]
public sealed class ForcedGarbageCollections;
