using System.Runtime.CompilerServices;
using System.Threading.Channels;
using XrayVL.Imaging;

namespace XrayVL.Inference;

/// <summary>
/// One prompt for the <see cref="BatchScheduler"/>: the chat-rendered token ids with one image token per image (as
/// <see cref="Text.ChatTemplate.Render"/> writes them), the images in order of appearance, and how to decode.
/// </summary>
public sealed record GenerationRequest(IReadOnlyList<int> PromptIds, IReadOnlyList<GrayImage> Images, GenerationOptions Options);

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>The model chose a stop token (end of turn or end of text).</summary>
    Stop,
    /// <summary>The token limit was reached (max tokens, or the model's context).</summary>
    Length,
}

/// <summary>A snapshot of the scheduler's counters.</summary>
/// <param name="Queued">Requests waiting for a row.</param>
/// <param name="Running">Rows being decoded.</param>
/// <param name="Completed">Generations delivered to the end.</param>
/// <param name="Cancelled">Generations whose client left before the end (queued or running).</param>
/// <param name="Failed">Generations ended by an error.</param>
/// <param name="Steps">Decode steps taken (each runs all running rows at once).</param>
/// <param name="LargestBatch">Most rows ever decoded in one step.</param>
public sealed record SchedulerStats(int Queued, int Running, long Completed, long Cancelled, long Failed, long Steps, int LargestBatch);

/// <summary>Refused because the scheduler's queue is full: try again later (HTTP 503).</summary>
public sealed class SchedulerBusyException(string message) : XrayVLException(message);

/// <summary>
/// The tokens of one scheduled generation, in order, as the worker decides them. Enumerate it once; cancelling the
/// enumeration (its token, or leaving the loop) withdraws the request, which frees its row at the next step.
/// </summary>
public sealed class GenerationStream : IAsyncEnumerable<int>
{
    private readonly Channel<int> tokens = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource withdrawn = new();
    private int enumerated;

    internal GenerationStream(GenerationRequest request, int[] expandedIds, float[][] pixels)
    {
        Request = request;
        ExpandedIds = expandedIds;
        Pixels = pixels;
    }

    public GenerationRequest Request { get; }

    /// <summary>Prompt positions (image placeholders expanded to the positions the image embeddings fill).</summary>
    public int PromptTokens => ExpandedIds.Length;

    /// <summary>Tokens delivered so far.</summary>
    public int GeneratedTokens { get; private set; }

    /// <summary>Set when the last token has been delivered.</summary>
    public FinishReason? FinishReason { get; private set; }

    internal int[] ExpandedIds { get; }
    internal float[][] Pixels { get; }
    internal int Row { get; set; } = -1;
    internal bool IsWithdrawn => withdrawn.IsCancellationRequested;
    internal CancellationToken WithdrawnToken => withdrawn.Token;

    private CancellationTokenRegistration callerRegistration;

    /// <summary>The submitter's token withdraws the request too (before anyone enumerates it).</summary>
    internal void LinkCaller(CancellationToken cancellationToken)
    {
        if (cancellationToken.CanBeCanceled) callerRegistration = cancellationToken.Register(Withdraw);
    }

    internal void Deliver(int token) => tokens.Writer.TryWrite(token);

    internal void Finish(FinishReason reason)
    {
        FinishReason = reason;
        tokens.Writer.TryComplete();
        callerRegistration.Dispose();
    }

    internal void Fail(Exception error)
    {
        tokens.Writer.TryComplete(error);
        callerRegistration.Dispose();
    }

    /// <summary>Withdraws the request: the worker drops it at its next step boundary.</summary>
    internal void Withdraw() => withdrawn.Cancel();

    public async IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref enumerated, 1) == 1) throw new InvalidOperationException("a generation stream can be enumerated once");
        using var registration = cancellationToken.Register(Withdraw);
        bool complete = false;
        try
        {
            await foreach (int token in ReadAll(cancellationToken))
            {
                GeneratedTokens++;
                yield return token;
            }
            complete = true;
        }
        finally
        {
            if (!complete) Withdraw();                 // the consumer left early (break, exception, cancellation)
        }
    }

    private async IAsyncEnumerable<int> ReadAll([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var reader = tokens.Reader;
        while (await reader.WaitToReadAsync(cancellationToken))
            while (reader.TryRead(out int token)) yield return token;
    }
}
