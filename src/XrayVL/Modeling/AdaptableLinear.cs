using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Kernels;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// A linear layer y = x Wᵀ + b with the state-dict keys of <c>torch.nn.Linear</c> (<c>weight</c> (out, in), <c>bias</c> (out)),
/// so Hugging Face checkpoint keys such as <c>q_proj.weight</c> load unchanged, that can carry a LoRA pair
/// (<c>lora_A</c> (r, in), <c>lora_B</c> (out, r)) attached later by <see cref="Lora.Inject"/>:
/// y = x Wᵀ + b + dropout(x) Aᵀ Bᵀ · scale.
/// Model code uses this class for every linear layer LoRA may target; see the design note in Lora.cs.
/// </summary>
public sealed class AdaptableLinear : nn.Module<Tensor, Tensor>
{
    // Field names are the state-dict keys. The LoRA fields are null until Lora.Inject attaches an adapter.
    private Parameter weight;   // (out, in)
    private Parameter? bias;    // (out)
    private Linear? lora_A;     // in → r, weight (r, in)
    private Linear? lora_B;     // r → out, weight (out, r)
    private double loraScale;   // alpha / r (or alpha / sqrt(r) with rsLoRA)
    // The same as a Scalar the layer holds: `tensor.mul(double)` makes a temporary native Scalar that only its finalizer
    // frees, and one collected while libtorch reads it gives a garbage factor; a field stays reachable for the call.
    private Scalar loraScaleScalar = 0.0;
    private double loraDropout; // probability, applied to the adapter's input only, in training mode
    private bool merged;        // adapter folded into weight: forward skips the adapter path
    private Tensor? weight_scale; // (out, in / 32) float32 when weight is stored as Q8_0 int8 or Q4_0 packed uint8 (Quantize); else null

    public AdaptableLinear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AdaptableLinear))
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // Same initialisation as torch.nn.Linear: kaiming-uniform(a = √5) weight, bias ~ U(−1/√in, 1/√in).
        // (Left uninitialised inside Layers.SkipInitialisation: the caller fills every weight from a file.)
        bool initialise = !Layers.InitialisationSkipped;
        var w = torch.empty([outFeatures, inFeatures], dtype, device);
        if (initialise) nn.init.kaiming_uniform_(w, a: Math.Sqrt(5));
        weight = new Parameter(w);
        if (hasBias)
        {
            double bound = inFeatures > 0 ? 1.0 / Math.Sqrt(inFeatures) : 0.0;
            var b = torch.empty([outFeatures], dtype, device);
            if (initialise) nn.init.uniform_(b, -bound, bound);
            bias = new Parameter(b);
        }
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }

    /// <summary>
    /// Redraws weight and bias as the constructor does (nn.Linear's init: kaiming-uniform(a = √5) is U(±1/√in)), from
    /// <paramref name="generator"/> when given. An attached adapter is left alone.
    /// </summary>
    public void ResetParameters(torch.Generator? generator = null)
    {
        double bound = InFeatures > 0 ? 1.0 / Math.Sqrt(InFeatures) : 0.0;
        using var _ = torch.no_grad();
        weight.uniform_(-bound, bound, generator);
        bias?.uniform_(-bound, bound, generator);
    }
    public Parameter Weight => weight;
    public Parameter? Bias => bias;

    public bool HasLora => lora_A is not null;
    public bool IsMerged => merged;
    /// <summary>The adapter's rank r, or 0 without an adapter.</summary>
    public long Rank => lora_A?.weight!.shape[0] ?? 0;
    public double LoraScale => loraScale;
    public double LoraDropout => loraDropout;
    /// <summary>A (r, in); null without an adapter.</summary>
    public Parameter? LoraA => lora_A?.weight;
    /// <summary>B (out, r); null without an adapter.</summary>
    public Parameter? LoraB => lora_B?.weight;

    /// <summary>
    /// True when the weight is stored quantized, with <c>weight_scale</c> (out, in / 32) float32 beside it: Q8_0
    /// (<c>weight</c> int8 (out, in)) or Q4_0 (<c>weight</c> uint8 (out, in / 2), two 4-bit levels a byte).
    /// </summary>
    public bool IsQuantized => weight_scale is not null;
    /// <summary>How the weight is stored: <see cref="LinearQuantization.None"/> (a float dtype), Q8 or Q4.</summary>
    public LinearQuantization Quantization => weight_scale is null ? LinearQuantization.None
        : weight.dtype == ScalarType.Byte ? LinearQuantization.Q4 : LinearQuantization.Q8;
    /// <summary>The group scales (out, in / 32), or null when the weight is not quantized.</summary>
    public Tensor? WeightScale => weight_scale;

    public override Tensor forward(Tensor input)
    {
        // input (…, in) → (…, out). Decoding (≤ 8 rows, no gradient) takes the C# kernels for bf16, Q8_0 and Q4_0
        // weights; longer inputs go to libtorch, a quantized weight widened to the input's dtype a block of rows at a time.
        if (weight_scale is not null && weight.dtype == ScalarType.Byte)
            return DecodeLinear.Applies(input, weight, InFeatures)
                ? DecodeLinear.Q4(input, weight, weight_scale, bias)
                : DecodeLinear.Q4Prefill(input, weight, weight_scale, bias);
        if (weight_scale is not null)
            return DecodeLinear.Applies(input, weight)
                ? DecodeLinear.Q8(input, weight, weight_scale, bias)
                : DecodeLinear.Q8Prefill(input, weight, weight_scale, bias);
        if (lora_A is null || lora_B is null || merged)
            return weight.dtype == ScalarType.BFloat16 && DecodeLinear.Applies(input, weight)
                ? DecodeLinear.Bf16(input, weight, bias)
                : nn.functional.linear(input, weight, bias);

        using var scope = torch.NewDisposeScope();
        var result = nn.functional.linear(input, weight, bias);
        // The adapter may be kept in float32 under a bf16/fp16 base (as PEFT does); compute it in its own dtype.
        var x = input.to(lora_A.weight!.dtype);
        if (loraDropout > 0 && training)
            x = nn.functional.dropout(x, loraDropout, training: true);
        var delta = lora_B.forward(lora_A.forward(x)).mul(loraScaleScalar);  // (…, out)
        return result.add(delta.to(result.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Stores the weight as Q8_0 (see <see cref="DecodeLinear.QuantizeQ8"/>): <c>weight</c> becomes int8 (out, in) and a
    /// buffer <c>weight_scale</c> (out, in / 32) float32 joins the state dict; the float weight is released. For inference
    /// only (no gradient flows to int8 weights); a LoRA adapter must be merged first. No-op when already quantized.
    /// </summary>
    public void QuantizeQ8() => Quantize(LinearQuantization.Q8);

    /// <summary>
    /// Stores the weight as Q4_0 (see <see cref="DecodeLinear.QuantizeQ4"/>): <c>weight</c> becomes uint8 (out, in / 2),
    /// two 4-bit levels per byte, with <c>weight_scale</c> (out, in / 32) float32; otherwise as <see cref="QuantizeQ8"/>.
    /// </summary>
    public void QuantizeQ4() => Quantize(LinearQuantization.Q4);

    /// <summary>Stores the weight in <paramref name="kind"/>; None, or an already quantized layer, is a no-op.</summary>
    public void Quantize(LinearQuantization kind)
    {
        if (weight_scale is not null || kind == LinearQuantization.None) return;
        if (lora_A is not null) throw new XrayVLException("a linear layer with a LoRA adapter cannot be quantized: merge it first (Lora.MergeAndUnload)");
        var (q, scales) = kind == LinearQuantization.Q4 ? DecodeLinear.QuantizeQ4(weight) : DecodeLinear.QuantizeQ8(weight);
        var old = weight;
        weight = new Parameter(q, requires_grad: false);
        ConditionallyRegisterParameter("weight", weight);   // replaces the registered float weight
        weight_scale = scales;
        ConditionallyRegisterBuffer("weight_scale", scales);
        old.Dispose();
    }

    /// <summary>
    /// Gives a layer built on the META device (shapes only) real storage in <paramref name="kind"/>, drawn directly: levels
    /// uniform over the format's range and one scale per group such that weights span nn.Linear's U(±1/√in); the bias (if
    /// any) U(±1/√in) in the default dtype. For models made quantized (random benchmark weights, or the target a
    /// checkpoint streams into), so that no float copy of the weight is ever allocated.
    /// </summary>
    internal void CreateQuantized(LinearQuantization kind, Device device)
    {
        if (weight.device_type != DeviceType.META) throw new InvalidOperationException("CreateQuantized needs a layer built on the META device");
        if (kind == LinearQuantization.None) throw new ArgumentException("no quantization given", nameof(kind));
        double bound = InFeatures > 0 ? 1.0 / Math.Sqrt(InFeatures) : 0.0;
        // Random levels for a random model (benchmarks); left unwritten when a file is about to fill them.
        bool initialise = !Layers.InitialisationSkipped;
        var levels = kind == LinearQuantization.Q4
            ? (initialise ? torch.randint(0, 256, [OutFeatures, InFeatures / 2], ScalarType.Byte, device) : torch.empty([OutFeatures, InFeatures / 2], ScalarType.Byte, device))     // two 4-bit levels a byte
            : (initialise ? torch.randint(-127, 128, [OutFeatures, InFeatures], ScalarType.Int8, device) : torch.empty([OutFeatures, InFeatures], ScalarType.Int8, device));
        var scales = torch.full([OutFeatures, InFeatures / MatVec.GroupSize], bound / (kind == LinearQuantization.Q4 ? 8 : 127), ScalarType.Float32, device);
        var old = weight;
        weight = new Parameter(levels, requires_grad: false);
        ConditionallyRegisterParameter("weight", weight);
        weight_scale = scales;
        ConditionallyRegisterBuffer("weight_scale", scales);
        old.Dispose();
        if (bias is not null)
        {
            var oldBias = bias;
            var b = torch.empty([OutFeatures], device: device);
            bias = new Parameter(initialise ? b.uniform_(-bound, bound) : b, requires_grad: false);
            ConditionallyRegisterParameter("bias", bias);
            oldBias.Dispose();
        }
    }

    /// <summary>
    /// Overwrites a quantized layer's weight and scales with the quantization of <paramref name="source"/> (out, in), a
    /// float weight in any dtype, e.g. a checkpoint tensor streamed into a model built quantized. The layer keeps its format.
    /// </summary>
    public void QuantizeInto(Tensor source)
    {
        if (weight_scale is null) throw new InvalidOperationException("layer is not quantized");
        if (source.dim() != 2 || source.shape[0] != OutFeatures || source.shape[1] != InFeatures)
            throw new ArgumentException($"expected a ({OutFeatures}, {InFeatures}) weight, got ({string.Join(", ", source.shape)})");
        using var contiguous = source.contiguous();
        if (Quantization == LinearQuantization.Q4) DecodeLinear.QuantizeQ4Into(contiguous, weight, weight_scale);
        else DecodeLinear.QuantizeQ8Into(contiguous, weight, weight_scale);
    }

    /// <summary>
    /// Attaches a fresh adapter of rank <paramref name="rank"/> as PEFT initialises one: A kaiming-uniform(a = √5), B zeros,
    /// so the layer's output is unchanged until B is trained. Adapter weights live on the base weight's device,
    /// in float32 when the base is bf16/fp16 (optimiser updates to small LoRA weights vanish in half precision), else in the base dtype.
    /// </summary>
    internal void AttachLora(int rank, double scale, double dropout)
    {
        if (lora_A is not null)
            throw new XrayVLException("layer already has a LoRA adapter; call Lora.MergeAndUnload first");
        if (weight_scale is not null)
            throw new XrayVLException("cannot attach a LoRA adapter to a quantized (int8/int4) layer: load the model in fp32 or bf16 to train");
        var dtype = weight.dtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : weight.dtype;
        var device = weight.device;

        var a = nn.Linear(InFeatures, rank, hasBias: false, device: device, dtype: dtype);
        var b = nn.Linear(rank, OutFeatures, hasBias: false, device: device, dtype: dtype);
        using (torch.no_grad())
        {
            nn.init.kaiming_uniform_(a.weight!, a: Math.Sqrt(5));
            nn.init.zeros_(b.weight!);
        }
        lora_A = a;
        lora_B = b;
        register_module("lora_A", a);
        register_module("lora_B", b);
        loraScale = scale;
        loraScaleScalar = scale;
        loraDropout = dropout;
        merged = false;
    }

    /// <summary>The weight update the adapter stands for: B A · scale, (out, in), computed in float32.</summary>
    public Tensor DeltaWeight()
    {
        if (lora_A is null || lora_B is null)
            throw new InvalidOperationException("layer has no LoRA adapter");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var delta = lora_B.weight!.to(ScalarType.Float32).matmul(lora_A.weight!.to(ScalarType.Float32)).mul(loraScaleScalar);
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>Folds the adapter into the weight (W += B A · scale); forward then skips the adapter path. No-op when already merged.</summary>
    public void Merge()
    {
        if (lora_A is null || merged) return;
        using var delta = DeltaWeight();
        using (torch.no_grad())
            weight.add_(delta.to(weight.dtype));
        merged = true;
    }

    /// <summary>Undoes <see cref="Merge"/> (W −= B A · scale); exact up to rounding in the weight's dtype. No-op when not merged.</summary>
    public void Unmerge()
    {
        if (lora_A is null || !merged) return;
        using var delta = DeltaWeight();
        using (torch.no_grad())
            weight.sub_(delta.to(weight.dtype));
        merged = false;
    }

    /// <summary>Merges the adapter permanently and removes it: the layer becomes a plain linear layer again.</summary>
    public void MergeAndUnload()
    {
        if (lora_A is null || lora_B is null) return;
        Merge();
        register_module("lora_A", null!);   // null unregisters
        register_module("lora_B", null!);
        lora_A.Dispose();
        lora_B.Dispose();
        lora_A = null;
        lora_B = null;
        merged = false;
    }
}
