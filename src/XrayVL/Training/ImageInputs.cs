using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// A batch's images as image embeddings (N, Nv, D) for the compute model, by the cheapest route the stage allows:
/// cached features through the projector when the encoder is frozen and nothing is augmented (<see cref="FeatureCache"/>);
/// otherwise pixels (preprocessed once and kept in memory when not augmented) through encoder and projector, the encoder
/// without gradients when it is frozen.
/// </summary>
public sealed class ImageInputs(PreprocessConfig preprocess, AugmentConfig? augment, FeatureCache? cache, bool visionTrains, int maxPixelsInMemory = 1024)
    : IDisposable
{
    private readonly Dictionary<string, Tensor> pixels = new(StringComparer.Ordinal);

    public FeatureCache? Cache => cache;

    /// <summary>
    /// Image embeddings for <paramref name="images"/> in reading order, or null when there are none.
    /// <paramref name="augmentRandom"/> draws the augmentation (null: none, as for validation and samples).
    /// </summary>
    public Tensor? Embed(VisionLanguageModel model, IReadOnlyList<string> images, Random? augmentRandom)
    {
        if (images.Count == 0) return null;
        using var scope = NewDisposeScope();
        var device = model.LanguageModel.Device;
        var dtype = model.LanguageModel.DType;
        bool augmenting = augment is not null && augmentRandom is not null;
        if (cache is not null && !augmenting && !visionTrains)
        {
            var features = cache.Get(images).to(dtype, device);                  // (N, Ntok, Dv)
            return model.ProjectFeatures(features).MoveToOuterDisposeScope();  // (N, Nv, D)
        }
        var batch = torch.stack(images.Select(p => Pixels(p, augmenting ? augmentRandom : null)).ToArray()).to(device); // (N, C, S, S)
        if (visionTrains) return model.EncodeImages(batch).MoveToOuterDisposeScope();
        Tensor vision;
        using (no_grad()) vision = model.EncodeVision(batch);                   // (N, Ntok, Dv), frozen: no graph
        return model.ProjectFeatures(vision).MoveToOuterDisposeScope();
    }

    /// <summary>(C, S, S) float32 pixels of one image; un-augmented ones are kept in memory after the first load.</summary>
    private Tensor Pixels(string path, Random? random)
    {
        if (random is not null)
            return Preprocess.ToTensor(Augment.Apply(ImageFile.Load(path), augment!, random), preprocess);
        if (pixels.TryGetValue(path, out var cached)) return cached;      // owned by this object, outside every dispose scope
        var tensor = Preprocess.ToTensor(ImageFile.Load(path), preprocess);
        if (pixels.Count < maxPixelsInMemory)
        {
            pixels[path] = tensor.DetachFromDisposeScope();
            return tensor;
        }
        return tensor;
    }

    public void Dispose()
    {
        foreach (var t in pixels.Values) t.Dispose();
        pixels.Clear();
    }
}
