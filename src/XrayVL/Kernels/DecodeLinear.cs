using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Kernels;

/// <summary>
/// Linear layers at decode time on tensors: y = x Wᵀ + b through <see cref="MatVec"/> when x has at most
/// <see cref="MatVec.MaxBatch"/> rows (one new token per sequence), with W in bf16, Q8_0 or Q4_0; prefill and training keep
/// libtorch's GEMM, for which a quantized weight is widened a block of rows at a time. Also the Q8_0 and Q4_0 quantizers.
/// </summary>
public static class DecodeLinear
{
    /// <summary>Threads the kernels use; 0 means torch's intra-op thread count (what `--threads` sets).</summary>
    public static int Threads { get; set; }

    /// <summary>
    /// True when the kernels take this product: x (…, K) with 1..8 rows, on the CPU, and no gradient wanted
    /// (the kernels have no backward). <paramref name="inFeatures"/> is K when the weight's own width is not (Q4_0 packs two a byte).
    /// </summary>
    public static bool Applies(Tensor x, Tensor weight, long? inFeatures = null)
    {
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU || x.dim() == 0) return false;
        if (torch.is_grad_enabled() && (x.requires_grad || weight.requires_grad)) return false;
        long k = x.shape[^1];
        long rows = k == 0 ? 0 : x.numel() / k;
        return rows >= 1 && rows <= MatVec.MaxBatch && k == (inFeatures ?? weight.shape[1]);
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

    /// <summary>
    /// The quantizers' float32 blocks stay under this: each block has a few same-sized transients (absolute values,
    /// quotients, levels), and a quantizing load's peak memory is the model plus these.
    /// </summary>
    private const long QuantizeChunkBytes = 1 << 20;

    /// <summary>Rows of an (N, K) matrix per chunk so that a float32 chunk stays under <paramref name="bytes"/>.</summary>
    private static long ChunkRows(long n, long k, long bytes = ChunkBytes) => Math.Clamp(bytes / (4 * Math.Max(1, k)), 1, Math.Max(1, n));

    /// <summary>
    /// Q8_0 of a float weight (N, K): each group of 32 along K becomes int8 q = round(w / scale), scale = max|w| / 127
    /// (an all-zero group gets scale 0 and q 0). Computed in float32, a few rows at a time.
    /// </summary>
    public static (Tensor Q, Tensor Scales) QuantizeQ8(Tensor weight)
    {
        CheckQuantizable(weight, "Q8_0");
        var q = torch.empty(weight.shape[0], weight.shape[1], ScalarType.Int8);                          // (N, K)
        var scales = torch.empty(weight.shape[0], weight.shape[1] / MatVec.GroupSize, ScalarType.Float32);  // (N, K/32)
        QuantizeQ8Into(weight, q, scales);
        return (q, scales);
    }

    /// <summary>
    /// <see cref="QuantizeQ8"/> into existing tensors q (N, K) int8 and scales (N, K / 32) float32, e.g. the storage of a
    /// layer built quantized while a checkpoint streams in: the only transients are a few float32 blocks of at most 1 MB.
    /// </summary>
    public static void QuantizeQ8Into(Tensor weight, Tensor q, Tensor scales)
    {
        CheckQuantizable(weight, "Q8_0");
        using var noGrad = torch.no_grad();
        long n = weight.shape[0], k = weight.shape[1], groupsPerRow = k / MatVec.GroupSize;
        CheckTargets(q, [n, k], ScalarType.Int8, scales, [n, groupsPerRow]);
        long step = ChunkRows(n, k, QuantizeChunkBytes);
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
    }

    /// <summary>q (N, K) int8, scales (N, K / 32) → w (N, K) in <paramref name="dtype"/> (products in float32).</summary>
    public static Tensor DequantizeQ8(Tensor q, Tensor scales, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long n = q.shape[0], k = q.shape[1];
        var w = q.to(ScalarType.Float32).view(n, k / MatVec.GroupSize, MatVec.GroupSize).mul_(scales.unsqueeze(-1));
        return w.view(n, k).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>x (…, K) any float dtype, packed (N, K / 2) uint8 Q4_0, scales (N, K / 32) float32 → (…, N) in x's dtype.</summary>
    public static Tensor Q4(Tensor x, Tensor packed, Tensor scales, Tensor? bias)
    {
        if (packed.dtype != ScalarType.Byte || scales.dtype != ScalarType.Float32)
            throw new ArgumentException($"expected uint8 packed weights and float32 scales, got {packed.dtype} and {scales.dtype}");
        using var scope = NewDisposeScope();
        long k = x.shape[^1], n = packed.shape[0];
        if (k != 2 * packed.shape[1]) throw new ArgumentException($"input has {k} features, the weight takes {2 * packed.shape[1]}");
        int rows = (int)(x.numel() / k);
        var x32 = x.reshape(rows, k).to(ScalarType.Float32).contiguous();   // (B, K)
        var y = torch.empty(rows, n, ScalarType.Float32);                   // (B, N)
        var qc = packed.contiguous();
        var sc = scales.contiguous();
        MatVec.Q4(qc.bytes, MemoryMarshal.Cast<byte, float>(sc.bytes), (int)n, (int)k, MemoryMarshal.Cast<byte, float>(x32.bytes), rows,
            MemoryMarshal.Cast<byte, float>(y.bytes), threads: ThreadCount());
        return Finish(x, y, bias, n).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Q4_0 of a float weight (N, K) (layout in <see cref="MatVec"/>'s Q4 part): per group of 32 along K, m is the weight
    /// of largest magnitude (with its sign), scale = m / −8, level = clamp(round(w / scale), −8, 7), so m itself is
    /// exactly level −8 and every level is used; an all-zero group gets scale 0 and level 0. Returns packed (N, K / 2)
    /// uint8 and scales (N, K / 32) float32.
    /// </summary>
    public static (Tensor Packed, Tensor Scales) QuantizeQ4(Tensor weight)
    {
        CheckQuantizable(weight, "Q4_0");
        var packed = torch.empty(weight.shape[0], weight.shape[1] / 2, ScalarType.Byte);                    // (N, K/2)
        var scales = torch.empty(weight.shape[0], weight.shape[1] / MatVec.GroupSize, ScalarType.Float32);  // (N, K/32)
        QuantizeQ4Into(weight, packed, scales);
        return (packed, scales);
    }

    /// <summary><see cref="QuantizeQ4"/> into existing tensors packed (N, K / 2) uint8 and scales (N, K / 32) float32.</summary>
    public static void QuantizeQ4Into(Tensor weight, Tensor packed, Tensor scales)
    {
        CheckQuantizable(weight, "Q4_0");
        using var noGrad = torch.no_grad();
        long n = weight.shape[0], k = weight.shape[1], groupsPerRow = k / MatVec.GroupSize, half = MatVec.Q4GroupBytes;
        CheckTargets(packed, [n, k / 2], ScalarType.Byte, scales, [n, groupsPerRow]);
        long step = ChunkRows(n, k, QuantizeChunkBytes);
        for (long first = 0; first < n; first += step)
        {
            using var chunkScope = NewDisposeScope();
            long rows = Math.Min(step, n - first);
            var groups = weight.detach().narrow(0, first, rows).to(ScalarType.Float32).view(rows, groupsPerRow, MatVec.GroupSize); // (r, K/32, 32)
            var extreme = groups.gather(-1, groups.abs().argmax(-1, keepdim: true));                            // (r, K/32, 1) signed
            var s = extreme.div(-8);                                                                               // (r, K/32, 1)
            var divisor = torch.where(s.ne(0), s, torch.ones_like(s));
            var nibbles = groups.div(divisor).round_().clamp_(-8, 7).add_(8).to(ScalarType.Int32);              // (r, K/32, 32) in 0..15
            var bytes = nibbles.narrow(-1, 0, half).add(nibbles.narrow(-1, half, half).mul(16));                // (r, K/32, 16): low | high << 4
            packed.narrow(0, first, rows).copy_(bytes.to(ScalarType.Byte).view(rows, k / 2));
            scales.narrow(0, first, rows).copy_(s.squeeze(-1));
        }
    }

    /// <summary>packed (N, K / 2) Q4_0, scales (N, K / 32) → w (N, K) in <paramref name="dtype"/> (products in float32).</summary>
    public static Tensor DequantizeQ4(Tensor packed, Tensor scales, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long n = packed.shape[0], k = 2 * packed.shape[1], groups = k / MatVec.GroupSize;
        var bytes = packed.to(ScalarType.Int32).view(n, groups, MatVec.Q4GroupBytes);                           // (N, K/32, 16)
        using Scalar sixteen = 16, eight = 8;   // held until the calls return (an implicit temporary can be finalized mid-call)
        var levels = torch.cat([bytes.remainder(sixteen), bytes.div(sixteen, RoundingMode.floor)], dim: -1).sub_(eight);   // (N, K/32, 32): low, high nibbles
        var w = levels.to(ScalarType.Float32).mul_(scales.unsqueeze(-1));
        return w.view(n, k).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y = x Wᵀ + b for a Q8_0 weight and any number of rows (prefill): libtorch's GEMM on the weight widened to x's dtype,
    /// a block of output rows at a time, so the widened copy never exists whole (a 7B MLP matrix would be 90 MB in bf16).
    /// bf16 and float32 blocks are widened by <see cref="MatVec.WidenQ8(ReadOnlySpan{sbyte}, ReadOnlySpan{float}, int, int, Span{ushort}, int)"/>
    /// into one reused block; other dtypes by <see cref="DequantizeQ8"/>.
    /// </summary>
    public static Tensor Q8Prefill(Tensor x, Tensor q, Tensor scales, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var (qc, sc) = (q.contiguous(), scales.contiguous());
        long k = q.shape[1], groups = k / MatVec.GroupSize;
        return WidenedPrefill(x, q.shape[0], k, bias, (first, rows, into) =>
        {
            var qs = MemoryMarshal.Cast<byte, sbyte>(qc.bytes).Slice((int)(first * k), (int)(rows * k));
            var ss = MemoryMarshal.Cast<byte, float>(sc.bytes).Slice((int)(first * groups), (int)(rows * groups));
            if (into.dtype == ScalarType.BFloat16) MatVec.WidenQ8(qs, ss, (int)rows, (int)k, MemoryMarshal.Cast<byte, ushort>(into.bytes), ThreadCount());
            else if (into.dtype == ScalarType.Float32) MatVec.WidenQ8(qs, ss, (int)rows, (int)k, MemoryMarshal.Cast<byte, float>(into.bytes), ThreadCount());
            else
            {
                using var widened = DequantizeQ8(q.narrow(0, first, rows), scales.narrow(0, first, rows), into.dtype);
                into.copy_(widened);
            }
        }).MoveToOuterDisposeScope();
    }

    /// <summary>As <see cref="Q8Prefill"/> for a Q4_0 weight (N, K / 2).</summary>
    public static Tensor Q4Prefill(Tensor x, Tensor packed, Tensor scales, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var (qc, sc) = (packed.contiguous(), scales.contiguous());
        long k = 2 * packed.shape[1], groups = k / MatVec.GroupSize;
        return WidenedPrefill(x, packed.shape[0], k, bias, (first, rows, into) =>
        {
            var qs = qc.bytes.Slice((int)(first * k / 2), (int)(rows * k / 2));
            var ss = MemoryMarshal.Cast<byte, float>(sc.bytes).Slice((int)(first * groups), (int)(rows * groups));
            if (into.dtype == ScalarType.BFloat16) MatVec.WidenQ4(qs, ss, (int)rows, (int)k, MemoryMarshal.Cast<byte, ushort>(into.bytes), ThreadCount());
            else if (into.dtype == ScalarType.Float32) MatVec.WidenQ4(qs, ss, (int)rows, (int)k, MemoryMarshal.Cast<byte, float>(into.bytes), ThreadCount());
            else
            {
                using var widened = DequantizeQ4(packed.narrow(0, first, rows), scales.narrow(0, first, rows), into.dtype);
                into.copy_(widened);
            }
        }).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y (…, N) = x Wᵀ + b, W widened by <paramref name="widen"/>(first row, rows, into): into is a contiguous (rows, K)
    /// block of x's dtype, allocated once and reused for every block of rows.
    /// </summary>
    private static Tensor WidenedPrefill(Tensor x, long n, long k, Tensor? bias, Action<long, long, Tensor> widen)
    {
        using var scope = NewDisposeScope();
        long step = ChunkRows(n, k);
        using var block = torch.empty(step, k, x.dtype);                                                    // (step, K)
        var parts = new List<Tensor>();
        for (long first = 0; first < n; first += step)
        {
            long rows = Math.Min(step, n - first);
            using var w = block.narrow(0, 0, rows);                                                          // (r, K), contiguous
            widen(first, rows, w);
            parts.Add(nn.functional.linear(x, w));                                                          // (…, r)
        }
        var y = parts.Count == 1 ? parts[0] : torch.cat(parts, dim: -1);                                   // (…, N)
        if (bias is not null) y = y.add_(bias.to(y.dtype));
        return y.MoveToOuterDisposeScope();
    }

    private static void CheckQuantizable(Tensor weight, string format)
    {
        if (weight.dim() != 2 || weight.shape[1] % MatVec.GroupSize != 0)
            throw new XrayVLException($"{format} needs a matrix with rows divisible by {MatVec.GroupSize}, got ({string.Join(", ", weight.shape)})");
    }

    private static void CheckTargets(Tensor q, long[] qShape, ScalarType qType, Tensor scales, long[] scaleShape)
    {
        if (q.dtype != qType || !q.shape.SequenceEqual(qShape) || !q.is_contiguous())
            throw new ArgumentException($"quantized weight must be a contiguous {qType} ({string.Join(", ", qShape)}), got {q.dtype} ({string.Join(", ", q.shape)})");
        if (scales.dtype != ScalarType.Float32 || !scales.shape.SequenceEqual(scaleShape))
            throw new ArgumentException($"scales must be float32 ({string.Join(", ", scaleShape)}), got {scales.dtype} ({string.Join(", ", scales.shape)})");
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
