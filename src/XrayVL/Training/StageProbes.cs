using XrayVL.Data;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// What a stage looks at while it trains, without changing the weights: the validation loss and generated samples
/// beside their references. Both leave the model in eval mode; the trainer sets its training mode again.
/// </summary>
internal static class StageProbes
{
    /// <summary>Token-weighted mean loss over the fixed validation subset, in eval mode without gradients.</summary>
    public static double ValidationLoss(VisionLanguageModel model, IReadOnlyList<TrainSample> val, int batchSize, ImageInputs images, int padId)
    {
        model.eval();
        using var _ = no_grad();
        double sum = 0;
        long count = 0;
        for (int i = 0; i < val.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            using var batch = Batch.Collate(val.Skip(i).Take(batchSize).ToList(), padId, model.LanguageModel.Device);
            if (batch.LearnedTokens == 0) continue;
            var loss = model.Loss(batch.Ids, batch.Labels, images.Embed(model, batch.Images, null));
            sum += loss.item<float>() * batch.LearnedTokens;
            count += batch.LearnedTokens;
        }
        return count == 0 ? double.NaN : sum / count;
    }

    /// <summary>Greedy generations with the front ends' decoding defaults for the stage's prompts.</summary>
    public static List<GeneratedSample> Samples(VisionLanguageModel model, XrayTokenizer tokenizer, PreprocessConfig preprocess,
        IReadOnlyList<PromptSample> prompts, int maxNewTokens, ImageInputs images)
    {
        model.eval();
        var pipeline = new InferencePipeline(model, tokenizer, preprocess);
        var options = pipeline.Decoding() with { MaxNewTokens = maxNewTokens };
        var result = new List<GeneratedSample>();
        foreach (var prompt in prompts)
        {
            string text;
            using (NewDisposeScope())
            using (no_grad())
            {
                try
                {
                    text = pipeline.Generate(prompt.PromptIds, images.Embed(model, prompt.Images, null), options);   // image embeds (N, Nv, D) from the feature cache when it has them
                }
                catch (XrayVLException e) { text = $"(generation failed: {e.Message})"; }
            }
            result.Add(new GeneratedSample(prompt.Prompt, text, prompt.Reference, prompt.Language, prompt.Images));
        }
        return result;
    }
}
