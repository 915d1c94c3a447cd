using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Data;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// A multi-label head on the vision encoder's pooled features: one logit per CheXpert observation
/// (<see cref="Observations.Names"/> order). The vision stage trains it with the encoder; a model folder keeps it as
/// classifier.safetensors (keys `classifier.weight` (14, Dp), `classifier.bias` (14)), which `xrayvl eval --tasks labels`
/// reads for per-label scores.
/// </summary>
public sealed class FindingClassifier : nn.Module<Tensor, Tensor>
{
    public const string FileName = "classifier.safetensors";

    private readonly Linear classifier;

    public FindingClassifier(int pooledDim, Device? device = null) : base("FindingClassifier")
    {
        classifier = nn.Linear(pooledDim, Observations.Names.Count, device: device);
        RegisterComponents();
    }

    /// <summary>Logits (B, 14) from pooled features (B, Dp).</summary>
    public override Tensor forward(Tensor pooled) => classifier.call(pooled);

    /// <summary>Probabilities (B, 14) for preprocessed pixels: sigmoid(head(encoder.Pooled(pixels))).</summary>
    public Tensor Probabilities(VisionEncoder encoder, Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var pooled = encoder.Pooled(pixels).to(classifier.weight!.dtype);
        return torch.sigmoid(forward(pooled)).MoveToOuterDisposeScope();
    }

    public void Save(string dir) =>
        ModuleWeights.SaveModule(Path.Combine(dir, FileName), this, metadata: new Dictionary<string, string>
        {
            ["format"] = "pt", ["labels"] = string.Join("|", Observations.Names),
        });

    /// <summary>The head saved in a model folder, or null when the folder has none.</summary>
    public static FindingClassifier? Load(string dir, int pooledDim)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return null;
        var head = new FindingClassifier(pooledDim);
        var tensors = SafeTensors.Load(path);
        try { ModuleWeights.LoadInto(head, tensors); }
        catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}", e); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        head.eval();
        return head;
    }
}
