using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Kernels;

/// <summary>
/// How a model's weights are held for inference (`--dtype`): fp32; bf16 (every weight and activation in bfloat16);
/// int8 = bf16 plus the language model's linear layers as Q8_0 (int8 groups of 32 with a float32 scale each);
/// int4 = the same with Q4_0 (4-bit levels in groups of 32 with a float32 scale each).
/// </summary>
public enum WeightFormat { Fp32, Bf16, Int8, Int4 }

/// <summary>How one linear layer's weight is stored: its float dtype, Q8_0 or Q4_0 (layouts in <see cref="MatVec"/>).</summary>
public enum LinearQuantization { None, Q8, Q4 }

public static class WeightFormats
{
    public const string Names = "fp32, bf16, int8 or int4";

    public static WeightFormat Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" => WeightFormat.Fp32,
        "bf16" or "bfloat16" => WeightFormat.Bf16,
        "int8" or "q8_0" => WeightFormat.Int8,
        "int4" or "q4_0" => WeightFormat.Int4,
        _ => throw new XrayVLException($"unknown --dtype '{name}': use {Names}"),
    };

    public static string Name(this WeightFormat format) => format switch
    {
        WeightFormat.Fp32 => "fp32",
        WeightFormat.Bf16 => "bf16",
        WeightFormat.Int8 => "int8",
        WeightFormat.Int4 => "int4",
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    /// <summary>How the language model's linear layers are stored in this format.</summary>
    public static LinearQuantization LinearQuantization(this WeightFormat format) => format switch
    {
        WeightFormat.Int8 => Kernels.LinearQuantization.Q8,
        WeightFormat.Int4 => Kernels.LinearQuantization.Q4,
        _ => Kernels.LinearQuantization.None,
    };

    /// <summary>The dtype of activations and of every weight that is not quantized.</summary>
    public static ScalarType ComputeDType(this WeightFormat format) =>
        format == WeightFormat.Fp32 ? ScalarType.Float32 : ScalarType.BFloat16;

    /// <summary>
    /// Converts a model already in memory in place: casts it to the format's compute dtype, then (int8, int4) quantizes the
    /// linear layers of <paramref name="languageModel"/>. Each layer's float weight is released as soon as its quantized
    /// copy exists. Loading a folder does not come this way (<see cref="LoadForInference"/> reads straight into the format).
    /// </summary>
    public static void Apply(nn.Module model, LanguageModel languageModel, WeightFormat format)
    {
        if (format != WeightFormat.Fp32) model.to(format.ComputeDType());
        QuantizeLinears(languageModel, format.LinearQuantization());
    }

    /// <summary>
    /// A model folder loaded for inference: no gradients anywhere, weights held as <paramref name="format"/>, read tensor
    /// by tensor straight into a model built in that format (<see cref="ModelLoading"/>), so no float32 copy of a bf16,
    /// int8 or int4 model is ever made.
    /// </summary>
    /// <param name="progress">Gets (bytes read, bytes in all) after each tensor.</param>
    public static LoadedModel LoadForInference(string dir, WeightFormat format, Action<long, long>? progress = null)
    {
        // Tokenizer and preprocessing first: a folder they do not fit fails at once, not after minutes of reading weights.
        string configPath = Path.Combine(dir, Checkpoint.ConfigFileName);
        if (!File.Exists(configPath)) return Checkpoint.Load(dir, ModelLoading.LoadModel(dir, format, progress));   // says what is missing
        var (tokenizer, preprocess) = Checkpoint.ReadCompanions(dir, ConfigFile.Read<VisionLanguageConfig>(configPath));
        return new LoadedModel(ModelLoading.LoadModel(dir, format, progress), tokenizer, preprocess, dir);
    }

    /// <summary>
    /// Stores every linear layer of <paramref name="module"/> as <paramref name="kind"/> (Q8_0 unless told); returns how
    /// many. A layer whose input width is not a multiple of 32 keeps its dtype, as does a tied output head (it is the
    /// embedding matrix).
    /// </summary>
    public static int QuantizeLinears(nn.Module module, LinearQuantization kind = Kernels.LinearQuantization.Q8)
    {
        if (kind == Kernels.LinearQuantization.None) return 0;
        int count = 0;
        foreach (var linear in module.modules().OfType<AdaptableLinear>().Where(l => l.InFeatures % MatVec.GroupSize == 0))
        {
            linear.Quantize(kind);
            count++;
        }
        return count;
    }

    /// <summary>
    /// A language model with random weights created directly in <paramref name="format"/>: the default dtype is set to
    /// the compute dtype while it is built, and (int8, int4) each linear layer is quantized as it is created, so no fp32 or
    /// full bf16 copy of the model ever exists (a 7B int8 model peaks near its int8 size).
    /// </summary>
    public static LanguageModel CreateRandom(LanguageModelConfig config, WeightFormat format)
    {
        var previous = torch.get_default_dtype();
        torch.set_default_dtype(format.ComputeDType());
        try
        {
            using var _ = Layers.QuantizeLinearsOnCreation(format.LinearQuantization());
            var model = new LanguageModel(config);
            model.eval();
            foreach (var p in model.parameters()) p.requires_grad = false;
            return model;
        }
        finally
        {
            torch.set_default_dtype(previous);
        }
    }

    /// <summary>
    /// Bytes of weights one decoded token reads: every linear layer of the decoder and the output head (a tied head reads
    /// the embedding matrix), plus the norms; the embedding lookup itself reads one row and is left out.
    /// </summary>
    public static long DecodeBytesPerToken(LanguageModel model)
    {
        long bytes = 0;
        foreach (var (name, t) in model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers()))
        {
            bool embedding = name.EndsWith("embed_tokens.weight", StringComparison.Ordinal);
            if (!embedding || model.Config.TieWordEmbeddings) bytes += t.numel() * t.element_size();
        }
        return bytes;
    }
}
