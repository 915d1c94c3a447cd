using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Kernels;

/// <summary>
/// Linear layers at decode time on tensors: y = x Wᵀ + b through <see cref="MatVec"/> when x has at most
/// <see cref="MatVec.MaxBatch"/> rows (one new token per sequence), with W in bf16 or Q8_0; prefill and training keep
/// libtorch's GEMM, for which a Q8_0 weight is widened one layer at a time. Also the Q8_0 quantizer.
/// </summary>
public static class DecodeLinear
{
    /// <summary>Threads the kernels use; 0 means torch's intra-op thread count (what `--threads` sets).</summary>
    public static int Threads { get; set; }

    /// <summary>
    /// True when the kernels take this product: x (…, K) with 1..8 rows, on the CPU, and no gradient wanted
    /// (the kernels have no backward).
    /// </summary>
    public static bool Applies(Tensor x, Tensor weight)
    {
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU || x.dim() == 0) return false;
        if (torch.is_grad_enabled() && (x.requires_grad || weight.requires_grad)) return false;
        long k = x.shape[^1];
        long rows = k == 0 ? 0 : x.numel() / k;
        return rows >= 1 && rows <= MatVec.MaxBatch && k == weight.shape[1];
    }

    /// <summary>x (…, K) any float dtype, weight (N, K) bf16 → (…, N) in x's dtype.</summary>
    public static Tensor Bf16(Tensor x, Tensor weight, Tensor? bias)
    {
        if (weight.dtype != ScalarType.BFloat16) throw new ArgumentException($"expected a bf16 weight, got {weight.dtype}");
        using var scope = NewDisposeScope();
        var (x32, y, rows, n, k) = Prepare(x, weight);
        var w = weight.contiguous();
        MatVec.Bf16(MemoryMarshal.Cast<byte, ushort>(w.bytes), (int)n, (int)k, MemoryMarshal.Cast<byte, float>(x32.bytes), rows,
            MemoryMarshal.Cast<byte, float>(y.bytes), threads: ThreadCount());
        return Finish(x, y, bias, n).MoveToOuterDisposeScope();
    }

    /// <summary>x (…, K) any float dtype, q (N, K) int8, scales (N, K / 32) float32 → (…, N) in x's dtype.</summary>
    public static Tensor Q8(Tensor x, Tensor q, Tensor scales, Tensor? bias)
    {
        if (q.dtype != ScalarType.Int8 || scales.dtype != ScalarType.Float32)
            throw new ArgumentException($"expected int8 weights and float32 scales, got {q.dtype} and {scales.dtype}");
        using var scope = NewDisposeScope();
        var (x32, y, rows, n, k) = Prepare(x, q);
        var qc = q.contiguous();
        var sc = scales.contiguous();
        MatVec.Q8(MemoryMarshal.Cast<byte, sbyte>(qc.bytes), MemoryMarshal.Cast<byte, float>(sc.bytes), (int)n, (int)k,
            MemoryMarshal.Cast<byte, float>(x32.bytes), rows, MemoryMarshal.Cast<byte, float>(y.bytes), threads: ThreadCount());
        return Finish(x, y, bias, n).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Float transients are kept under this many bytes: freshly mapped pages are expensive (tens of µs per 4 KiB page on
    /// the virtual machines measured here), while blocks this small are recycled by the C heap from one chunk to the next.
    /// </summary>
    private const long ChunkBytes = 8 << 20;

    /// <summary>Rows of an (N, K) matrix per chunk so that a float32 chunk stays under <see cref="ChunkBytes"/>.</summary>
    private static long ChunkRows(long n, long k) => Math.Clamp(ChunkBytes / (4 * Math.Max(1, k)), 1, Math.Max(1, n));

    /// <summary>
    /// Q8_0 of a float weight (N, K): each group of 32 along K becomes int8 q = round(w / scale), scale = max|w| / 127
    /// (an all-zero group gets scale 0 and q 0). Computed in float32, a few rows at a time.
    /// </summary>
    public static (Tensor Q, Tensor Scales) QuantizeQ8(Tensor weight)
    {
        if (weight.dim() != 2 || weight.shape[1] % MatVec.GroupSize != 0)
            throw new XrayVLException($"Q8_0 needs a matrix with rows divisible by {MatVec.GroupSize}, got ({string.Join(", ", weight.shape)})");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        long n = weight.shape[0], k = weight.shape[1], groupsPerRow = k / MatVec.GroupSize;
        var q = torch.empty(n, k, ScalarType.Int8);                       // (N, K)
        var scales = torch.empty(n, groupsPerRow, ScalarType.Float32);    // (N, K/32)
        long step = ChunkRows(n, k);
        for (long first = 0; first < n; first += step)
        {
            using var chunkScope = NewDisposeScope();
            long rows = Math.Min(step, n - first);
            var groups = weight.detach().narrow(0, first, rows).to(ScalarType.Float32).view(rows, groupsPerRow, MatVec.GroupSize); // (r, K/32, 32)
            var s = groups.abs().amax([-1]).div_(127);                                                           // (r, K/32)
            var divisor = torch.where(s.gt(0), s, torch.ones_like(s)).unsqueeze(-1);                             // (r, K/32, 1)
            q.narrow(0, first, rows).copy_(groups.div(divisor).round_().clamp_(-127, 127).view(rows, k));   // div: groups may be the caller's own float32 weight
            scales.narrow(0, first, rows).copy_(s);
        }
        return (q.MoveToOuterDisposeScope(), scales.MoveToOuterDisposeScope());
    }

    /// <summary>q (N, K) int8, scales (N, K / 32) → w (N, K) in <paramref name="dtype"/> (products in float32).</summary>
    public static Tensor DequantizeQ8(Tensor q, Tensor scales, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long n = q.shape[0], k = q.shape[1];
        var w = q.to(ScalarType.Float32).view(n, k / MatVec.GroupSize, MatVec.GroupSize).mul_(scales.unsqueeze(-1));
        return w.view(n, k).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y = x Wᵀ + b for a Q8_0 weight and any number of rows (prefill): libtorch's GEMM on the weight widened to x's dtype,
    /// a block of output rows at a time, so the widened copy never exists whole (a 7B MLP matrix would be 90 MB in bf16).
    /// </summary>
    public static Tensor Q8Prefill(Tensor x, Tensor q, Tensor scales, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        long n = q.shape[0], k = q.shape[1], step = ChunkRows(n, k);
        var parts = new List<Tensor>();
        for (long first = 0; first < n; first += step)
        {
            long rows = Math.Min(step, n - first);
            using var w = DequantizeQ8(q.narrow(0, first, rows), scales.narrow(0, first, rows), x.dtype);   // (r, K)
            parts.Add(nn.functional.linear(x, w));                                                          // (…, r)
        }
        var y = parts.Count == 1 ? parts[0] : torch.cat(parts, dim: -1);                                   // (…, N)
        if (bias is not null) y = y.add_(bias.to(y.dtype));
        return y.MoveToOuterDisposeScope();
    }

    private static int ThreadCount() => Threads > 0 ? Threads : Math.Max(1, torch.get_num_threads());

    private static (Tensor X32, Tensor Y, int Rows, long N, long K) Prepare(Tensor x, Tensor weight)
    {
        long k = x.shape[^1], n = weight.shape[0];
        int rows = (int)(x.numel() / k);
        if (k != weight.shape[1]) throw new ArgumentException($"input has {k} features, the weight takes {weight.shape[1]}");
        // Spans over tensor storage are int-indexed: 2 GB per matrix is far above any decoder's largest (the vocabulary head).
        if (weight.numel() * weight.element_size() > int.MaxValue) throw new XrayVLException($"weight of {weight.numel()} values is too large for the decode kernels");
        var x32 = x.reshape(rows, k).to(ScalarType.Float32).contiguous();   // (B, K)
        var y = torch.empty(rows, n, ScalarType.Float32);                   // (B, N)
        return (x32, y, rows, n, k);
    }

    private static Tensor Finish(Tensor x, Tensor y, Tensor? bias, long n)
    {
        var result = y.view([.. x.shape[..^1], n]);                          // (…, N)
        if (bias is not null) result = result.add_(bias.to(ScalarType.Float32));
        return result.to(x.dtype);
    }
}
