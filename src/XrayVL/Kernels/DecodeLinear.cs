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
    /// Q8_0 of a float weight (N, K): each group of 32 along K becomes int8 q = round(w / scale), scale = max|w| / 127
    /// (an all-zero group gets scale 0 and q 0). Computed in float32 one matrix at a time.
    /// </summary>
    public static (Tensor Q, Tensor Scales) QuantizeQ8(Tensor weight)
    {
        if (weight.dim() != 2 || weight.shape[1] % MatVec.GroupSize != 0)
            throw new XrayVLException($"Q8_0 needs a matrix with rows divisible by {MatVec.GroupSize}, got ({string.Join(", ", weight.shape)})");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        long n = weight.shape[0], k = weight.shape[1];
        var groups = weight.detach().to(ScalarType.Float32).view(n, k / MatVec.GroupSize, MatVec.GroupSize);   // (N, K/32, 32)
        var scales = groups.abs().amax([-1]).div_(127);                                                          // (N, K/32)
        var divisor = torch.where(scales.gt(0), scales, torch.ones_like(scales)).unsqueeze(-1);                  // (N, K/32, 1)
        var q = groups.div(divisor).round_().clamp_(-127, 127).to(ScalarType.Int8).view(n, k);
        return (q.MoveToOuterDisposeScope(), scales.contiguous().MoveToOuterDisposeScope());
    }

    /// <summary>q (N, K) int8, scales (N, K / 32) → w (N, K) in <paramref name="dtype"/> (products in float32).</summary>
    public static Tensor DequantizeQ8(Tensor q, Tensor scales, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long n = q.shape[0], k = q.shape[1];
        var w = q.to(ScalarType.Float32).view(n, k / MatVec.GroupSize, MatVec.GroupSize).mul_(scales.unsqueeze(-1));
        return w.view(n, k).to(dtype).MoveToOuterDisposeScope();
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
