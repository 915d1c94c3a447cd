using TorchSharp;
using TorchSharp.Modules;
using XrayVL.Data;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// One extra image position that tells the language model what the vision stage's classifier decided (config
/// `finding_hint`): the 14-label head on the pooled features, each probability compared with the threshold chosen for
/// that label on validation, and the resulting 0/1 vector (<see cref="Observations.Names"/> order) embedded by a
/// trainable linear layer.
/// <code>
/// features (N, Ntok, Dv) → mean over tokens (N, Dv) → classifier → sigmoid (N, 14) → ≥ thresholds (N, 14) of 0/1
///                        → embed (N, D) → one position (N, 1, D), appended after the projector's tokens
/// </code>
/// Why: the report's verdict should follow the classifier's, which is measured and thresholded on held-out images,
/// instead of being re-learned by a small language model from 49 image tokens (PromptMRG feeds a classifier's findings
/// to its report decoder for the same reason). Thresholding makes training and inference see the same kind of input:
/// the classifier is confident on its own training images and less so on new ones, but a decision is a decision.
/// Only the embedding trains (as part of the projector); the classifier and thresholds are copied in after the vision
/// stage and stay fixed. Measured on the default recipe (configs/default-hint.json, docs/training.md): the decoder mostly
/// does what the hint says, yet its reports called fewer normal images normal than the model without the hint. Keys: `finding_hint.classifier.{weight,bias}`, `finding_hint.thresholds`, `finding_hint.embed.{weight,bias}`.
/// </summary>
public sealed class FindingHint : nn.Module<Tensor, Tensor>
{
    private readonly Linear classifier;
    private readonly Parameter thresholds;
    private readonly Linear embed;

    public FindingHint(int pooledDim, int textDim, Device? device = null) : base(nameof(FindingHint))
    {
        int labels = Observations.Names.Count;
        classifier = nn.Linear(pooledDim, labels, device: device);
        thresholds = new Parameter(torch.full(labels, 0.5f, device: device), requires_grad: false);
        embed = nn.Linear(labels, textDim, device: device);
        RegisterComponents();
    }

    /// <summary>The embedding layer's parameters: what trains (with the projector); the classifier and thresholds never do.</summary>
    public IEnumerable<Parameter> TrainableParameters => embed.parameters();

    /// <summary>The 0/1 decisions (N, 14) for vision tokens (N, Ntok, Dv) whose mean is the encoder's pooled vector.</summary>
    public Tensor Decisions(Tensor features)
    {
        using var scope = NewDisposeScope();
        // In float32 whatever the model's dtype, so that a bf16 copy decides as the float32 model does near a threshold.
        var pooled = features.mean([1]).to(ScalarType.Float32);
        var logits = nn.functional.linear(pooled, classifier.weight!.to(ScalarType.Float32), classifier.bias!.to(ScalarType.Float32));
        var probabilities = torch.sigmoid(logits);
        return probabilities.ge(thresholds.to(ScalarType.Float32)).to(embed.weight!.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The hint position (N, 1, D) for vision tokens (N, Ntok, Dv).</summary>
    public override Tensor forward(Tensor features)
    {
        using var scope = NewDisposeScope();
        return embed.call(Decisions(features)).unsqueeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>Copies a trained classifier head and its 14 per-label thresholds (on the sigmoid's scale) in.</summary>
    public void SetClassifier(FindingClassifier head, IReadOnlyList<double> labelThresholds)
    {
        if (labelThresholds.Count != Observations.Names.Count)
            throw new ArgumentException($"{labelThresholds.Count} thresholds for {Observations.Names.Count} labels", nameof(labelThresholds));
        using var _ = no_grad();
        var source = head.state_dict();
        classifier.weight!.copy_(source["classifier.weight"]);
        classifier.bias!.copy_(source["classifier.bias"]);
        thresholds.copy_(torch.tensor(labelThresholds.Select(t => (float)t).ToArray()));
    }

    /// <summary>Redraws the embedding (nn.Linear's init); the classifier is overwritten by <see cref="SetClassifier"/>.</summary>
    public void InitializeWeights(Generator? generator = null)
    {
        using var _ = no_grad();
        foreach (var layer in new[] { classifier, embed })
        {
            double bound = 1 / Math.Sqrt(layer.weight!.shape[1]);
            layer.weight.uniform_(-bound, bound, generator);
            layer.bias!.uniform_(-bound, bound, generator);
        }
        thresholds.fill_(0.5);
    }
}
