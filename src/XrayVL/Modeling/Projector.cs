using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Maps vision tokens (B, N, Dv) into the language model's embedding space (B, N', D), with Hugging Face
/// LlavaMultiModalProjector's key names:
/// "linear" (XrayGPT): `linear_1` (Dv → D);
/// "mlp2x_gelu" (LLaVA-1.5): `linear_1` (Dv → D) → activation (LLaVA's `projector_hidden_act`, GELU by default) → `linear_2` (D → D);
/// "merge4" (MiniGPT-v2): every 4 consecutive tokens concatenated along features (B, N/4, 4·Dv), then `linear_1`
/// (4·Dv → D) — a quarter of the tokens for the language model to read.
/// </summary>
public sealed class Projector : nn.Module<Tensor, Tensor>
{
    // quick_gelu's factor, held for the process: an implicit Scalar temporary can be finalized while libtorch reads it.
    private static readonly Scalar QuickGeluScale = 1.702;
    private readonly nn.Module<Tensor, Tensor> linear_1;
    private readonly nn.Module<Tensor, Tensor>? linear_2;

    private Projector(string type, int visionDim, int textDim, int mergeFactor, bool mlp, string activation, Device? device) : base("Projector")
    {
        if (!IsSupportedActivation(activation))
            throw new XrayVLException($"projector activation '{activation}' is not supported (gelu, gelu_pytorch_tanh, gelu_new, quick_gelu, relu, silu, linear)");
        Type = type;
        Activation = activation;
        MergeFactor = mergeFactor;
        VisionDim = visionDim;
        linear_1 = Layers.Linear(mergeFactor * visionDim, textDim, true, device);
        linear_2 = mlp ? Layers.Linear(textDim, textDim, true, device) : null;
        RegisterComponents();
    }

    /// <summary>The projector_type this was built from.</summary>
    public string Type { get; }
    /// <summary>How many adjacent vision tokens become one output token (1 unless merging).</summary>
    public int MergeFactor { get; }
    /// <summary>Feature width Dv of the vision tokens it accepts.</summary>
    public int VisionDim { get; }
    /// <summary>The activation between the two linears of "mlp2x_gelu" (unused by the one-linear types).</summary>
    public string Activation { get; }

    /// <summary>transformers' ACT2FN names this projector computes.</summary>
    public static bool IsSupportedActivation(string name) =>
        name is "gelu" or "gelu_pytorch_tanh" or "gelu_new" or "quick_gelu" or "relu" or "silu" or "linear";

    public static Projector Create(string type, int visionDim, int textDim, Device? device = null, string activation = "gelu") => type switch
    {
        "linear" => new Projector(type, visionDim, textDim, 1, mlp: false, activation, device),
        "mlp2x_gelu" => new Projector(type, visionDim, textDim, 1, mlp: true, activation, device),
        "merge4" => new Projector(type, visionDim, textDim, 4, mlp: false, activation, device),
        _ => throw new XrayVLException($"projector_type '{type}' is not supported (linear, mlp2x_gelu, merge4)"),
    };

    /// <summary>Redraws the linear layers' weights (nn.Linear's init), from <paramref name="generator"/> when given.</summary>
    public void InitializeWeights(Generator? generator = null)
    {
        foreach (var layer in modules().OfType<AdaptableLinear>()) layer.ResetParameters(generator);
    }

    /// <summary>Output token count for `inputTokens` vision tokens; throws when merging cannot divide them evenly.</summary>
    public int OutputTokens(int inputTokens)
    {
        if (inputTokens % MergeFactor != 0)
            throw new XrayVLException(
                $"projector '{Type}' merges {MergeFactor} adjacent tokens but the vision encoder gives {inputTokens} " +
                $"(not a multiple of {MergeFactor}); pick another image size, feature strategy or projector");
        return inputTokens / MergeFactor;
    }

    private Tensor Activate(Tensor x) => Activation switch
    {
        "gelu" => nn.functional.gelu(x),
        // transformers' gelu_new and gelu_pytorch_tanh are the same tanh approximation of GELU.
        "gelu_pytorch_tanh" or "gelu_new" => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "quick_gelu" => x * torch.sigmoid(QuickGeluScale * x),
        "relu" => nn.functional.relu(x),
        "silu" => nn.functional.silu(x),
        // transformers' "linear" activation is the identity (an exported one-linear projector uses it).
        "linear" => x,
        _ => throw new XrayVLException($"projector activation '{Activation}' is not supported"),
    };

    /// <summary>(B, N, Dv) → (B, N / merge, D)</summary>
    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        if (tokens.dim() != 3 || tokens.shape[2] != VisionDim)
            throw new XrayVLException(
                $"projector '{Type}' expects vision tokens (B, N, {VisionDim}), got ({string.Join(", ", tokens.shape)})");
        long b = tokens.shape[0], n = tokens.shape[1], dv = tokens.shape[2];
        // Row-major reshape puts tokens k·i .. k·i+k−1 side by side in one row: exactly their concatenation.
        var x = tokens.reshape(b, OutputTokens((int)n), MergeFactor * dv); // (B, N/k, k·Dv)
        x = linear_1.call(x); // (B, N/k, D)
        if (linear_2 != null) x = linear_2.call(Activate(x));
        return x.MoveToOuterDisposeScope();
    }
}
