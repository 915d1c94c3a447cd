using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Text;

namespace XrayVL.Inference;

/// <summary>
/// The way from a conversation about X-rays to text, as chat sessions, reports and the server use it, whatever the
/// model family. Two families implement it:
/// <list type="bullet">
/// <item><see cref="InferencePipeline"/>: vision encoder + projector + decoder-only language model with image tokens in a
/// chat template (this project's models, Hugging Face LLaVA, XrayGPT, MiniGPT-Med);</item>
/// <item><see cref="XrayGlmPipeline"/>: VisualGLM / XrayGLM (EVA-CLIP + Q-Former + ChatGLM-6B), with its own prompt,
/// 2D positions and decoding.</item>
/// </list>
/// </summary>
public interface IInferencePipeline
{
    /// <summary>The language a front end uses when the user names none: "en", or "zh" for XrayGLM (it was trained in Chinese).</summary>
    string DefaultLanguage { get; }

    /// <summary>Images one conversation may hold: XrayGLM reads one X-ray per conversation; the others any number.</summary>
    int MaxImagesPerConversation { get; }

    /// <summary>The decoding every front end starts from, with <paramref name="options"/> (null: the family's defaults) on top.</summary>
    GenerationOptions Decoding(GenerationOptions? options = null);

    /// <summary>
    /// Starts generating the answer to <paramref name="conversation"/>'s last user turn about <paramref name="images"/>
    /// (in order of appearance). A bad request throws here, before any output; the stream ends with a finish reason,
    /// and leaving it early (or cancelling) stops the generation.
    /// </summary>
    GenerationStream Start(Conversation conversation, IReadOnlyList<GrayImage> images, GenerationOptions options,
        CancellationToken cancellationToken = default);

    /// <summary>Turns the stream's token ids into text pieces as they complete (special tokens dropped).</summary>
    IStreamingDecoder CreateTextDecoder();

    /// <summary>Texts that end an answer where the model writes them (a seed prompt format's, e.g. XrayGPT's "###"); usually none.</summary>
    IReadOnlyList<string> StopStrings { get; }

    /// <summary>The request a report is asked with: the family's own words where it has them, else the project's, in <paramref name="language"/>.</summary>
    string ReportRequest(string language);

    /// <summary>
    /// The small image the model sees, before normalisation, of a full-resolution X-ray. Giving the pipeline this
    /// instead of the original changes nothing, so a server keeps only this.
    /// </summary>
    GrayImage ModelSquare(GrayImage image);

    /// <summary>Generations waiting, running and done (what /healthz reports).</summary>
    SchedulerStats Stats { get; }
}

/// <summary>A model folder loaded for inference: the pipeline over it, the folder's name (the model id) and its weights.</summary>
public sealed class LoadedPipeline(IInferencePipeline pipeline, string name, IDisposable weights) : IDisposable
{
    public IInferencePipeline Pipeline { get; } = pipeline;
    public string Name { get; } = name;

    /// <summary>
    /// Loads <paramref name="dir"/> in <paramref name="format"/>: a VisualGLM folder (`xrayvl import xrayglm`) as an
    /// <see cref="XrayGlmPipeline"/>, any other model folder as an <see cref="InferencePipeline"/>, generating through a
    /// <see cref="BatchScheduler"/> when <paramref name="batching"/> is given (a server), else one generation at a time.
    /// <paramref name="progress"/> gets (bytes read, bytes in all) as the weights are read.
    /// </summary>
    public static LoadedPipeline Load(string dir, WeightFormat format, BatchSchedulerOptions? batching = null, Action<long, long>? progress = null)
    {
        if (VisualGlmFolder.IsVisualGlm(dir))
        {
            var glm = VisualGlmFolder.Load(dir, format, progress);
            return new LoadedPipeline(new XrayGlmPipeline(glm), glm.Name, glm);
        }
        var loaded = WeightFormats.LoadForInference(dir, format, progress);
        try
        {
            var scheduler = batching is null ? null : new BatchScheduler(loaded.Model, loaded.Preprocess, batching);
            return new LoadedPipeline(new InferencePipeline(loaded, scheduler), loaded.Name, new Owned(scheduler, loaded.Model));
        }
        catch
        {
            loaded.Model.Dispose();
            throw;
        }
    }

    public void Dispose() => weights.Dispose();

    /// <summary>Disposes a scheduler before the model it runs.</summary>
    private sealed class Owned(IDisposable? first, IDisposable second) : IDisposable
    {
        public void Dispose()
        {
            first?.Dispose();
            second.Dispose();
        }
    }
}
