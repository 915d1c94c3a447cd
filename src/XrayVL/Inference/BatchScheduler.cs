using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Inference;

/// <summary>How the <see cref="BatchScheduler"/> shares the model.</summary>
public sealed record BatchSchedulerOptions
{
    /// <summary>Most rows decoded in one step: 8 keeps a step near one row's latency for compact models on a CPU.</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Most requests waiting for a row; more are refused (<see cref="SchedulerBusyException"/>) rather than queued without end.</summary>
    public int MaxQueue { get; init; } = 256;

    public BatchSchedulerOptions Validate()
    {
        if (MaxBatch < 1) throw new XrayVLException($"max batch must be at least 1, got {MaxBatch}");
        if (MaxQueue < 1) throw new XrayVLException($"max queue must be at least 1, got {MaxQueue}");
        return this;
    }
}

/// <summary>
/// Runs the generations of many clients on one model, one batch at a time (continuous batching).
/// <para>
/// One worker thread owns the model. Requests wait in a bounded first-in-first-out queue. Between decode steps the
/// worker admits waiting requests while rows are free (up to <see cref="BatchSchedulerOptions.MaxBatch"/>): their images
/// are encoded in one vision batch, their prompts prefilled together (left padding) and joined to the rows already
/// running; then every row is stepped at once and each row's token goes to its own <see cref="GenerationStream"/>.
/// A row ends on its own (stop token or limit) and leaves at once. A client that withdraws (cancels or stops reading)
/// is dropped at the next step boundary, so its row is free for the next waiting request within one step.
/// </para>
/// <para>
/// Rows in one batch share their decoding settings (greedy or sampling, temperature, top-k/top-p, penalties, stop
/// tokens); only the token limit is per row. When the request at the head of the queue decodes differently, it waits
/// until the running rows have finished and then starts the next batch — strict arrival order, so nobody starves.
/// A seeded sampling request runs alone, so that its seed reproduces its output.
/// </para>
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    private readonly VisionLanguageModel model;
    private readonly PreprocessConfig preprocess;
    private readonly BatchSchedulerOptions options;
    private readonly LinkedList<GenerationStream> queue = new();
    private readonly object gate = new();
    private readonly SemaphoreSlim wake = new(0);
    private readonly Thread worker;
    private readonly Dictionary<int, GenerationStream> rows = [];
    private DecodeSession? session;
    private volatile bool stopping;
    private long completed, cancelled, failed, steps;
    private int largestBatch;

    public BatchScheduler(VisionLanguageModel model, PreprocessConfig preprocess, BatchSchedulerOptions? options = null)
    {
        this.model = model;
        this.preprocess = preprocess.Validate();
        this.options = (options ?? new BatchSchedulerOptions()).Validate();
        worker = new Thread(Run) { IsBackground = true, Name = "xrayvl-batch-scheduler" };
        worker.Start();
    }

    public BatchSchedulerOptions Options => options;

    public SchedulerStats Stats
    {
        get
        {
            lock (gate)
                return new SchedulerStats(queue.Count, rows.Count, Interlocked.Read(ref completed), Interlocked.Read(ref cancelled),
                    Interlocked.Read(ref failed), Interlocked.Read(ref steps), largestBatch);
        }
    }

    /// <summary>
    /// Queues a generation and returns its token stream. Checks the request at once (image count, vocabulary,
    /// options, room in the context) so that a bad request fails here, in its caller, and never in the batch.
    /// Throws <see cref="SchedulerBusyException"/> when the queue is full.
    /// </summary>
    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(stopping, this);
        cancellationToken.ThrowIfCancellationRequested();
        request.Options.Validate();
        if (request.Options.NumBeams > 1) throw new XrayVLException("beam search is not served in batches; use num_beams 1");
        var expanded = InferencePipeline.ExpandedIds(model, request.PromptIds, request.Images.Count);
        // Preprocessing (resize, normalise) is plain CPU work: done here, on the caller's thread, not on the model's.
        var pixels = request.Images.Select(image => Preprocess.ToArray(image, preprocess)).ToArray();

        var stream = new GenerationStream(request, expanded, pixels);
        lock (gate)
        {
            if (queue.Count >= options.MaxQueue)
                throw new SchedulerBusyException($"the server is busy: {queue.Count} requests are already waiting; try again shortly");
            queue.AddLast(stream);
        }
        stream.WithdrawnToken.Register(Wake);
        stream.LinkCaller(cancellationToken);
        Wake();
        return stream;
    }

    /// <summary>Queues a generation and streams its tokens (see <see cref="Submit"/>; the checks run at the first MoveNext).</summary>
    public async IAsyncEnumerable<int> GenerateAsync(GenerationRequest request,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var stream = Submit(request, cancellationToken);
        await foreach (int token in stream.WithCancellation(cancellationToken)) yield return token;
    }

    private void Run()
    {
        while (!stopping)
        {
            try
            {
                if (!Admit() && rows.Count == 0)
                {
                    wake.Wait();
                    continue;
                }
                DropWithdrawn();
                if (rows.Count == 0) continue;
                StepOnce();
            }
            catch (Exception e) when (!stopping)
            {
                FailAll(e);
            }
        }
        FailAll(new ObjectDisposedException(nameof(BatchScheduler), "the scheduler is shutting down"));
        lock (gate)
        {
            foreach (var waiting in queue) waiting.Fail(new ObjectDisposedException(nameof(BatchScheduler), "the scheduler is shutting down"));
            queue.Clear();
        }
    }

    /// <summary>Moves waiting requests into the batch while rows are free and their decoding matches; true when any joined.</summary>
    private bool Admit()
    {
        var admitted = new List<GenerationStream>();
        lock (gate)
        {
            while (queue.First is { } node && rows.Count + admitted.Count < options.MaxBatch)
            {
                var head = node.Value;
                if (head.IsWithdrawn)
                {
                    queue.RemoveFirst();
                    Interlocked.Increment(ref cancelled);
                    head.Fail(new OperationCanceledException("the request was withdrawn"));
                    continue;
                }
                var current = rows.Count > 0 ? session!.Options : admitted.FirstOrDefault()?.Request.Options;
                if (current is not null && !CanShareBatch(current, head.Request.Options)) break;
                queue.RemoveFirst();
                admitted.Add(head);
            }
        }
        if (admitted.Count == 0) return false;

        try
        {
            if (rows.Count == 0)
            {
                session?.Dispose();
                session = null;
                session = new DecodeSession(model.LanguageModel, admitted[0].Request.Options);
            }
            Join(admitted);
        }
        catch (Exception e)
        {
            // Not one request's fault (those are caught per request in Join): the admitted ones fail, the batch goes on.
            foreach (var request in admitted.Where(a => a.Row < 0))
            {
                Interlocked.Increment(ref failed);
                request.Fail(e);
            }
            if (session is null) throw;
        }
        return true;
    }

    /// <summary>Encodes the admitted requests' images in one vision batch and adds their prompts to the session.</summary>
    private void Join(List<GenerationStream> admitted)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        // One vision batch for every image of every admitted request: (N, C, S, S) → (N, Nv, D).
        var allPixels = admitted.SelectMany(a => a.Pixels).ToList();
        Tensor? imageEmbeds = null;
        if (allPixels.Count > 0)
        {
            int channels = preprocess.Channels, size = preprocess.ImageSize;
            var flat = allPixels.SelectMany(p => p).ToArray();
            var pixels = torch.tensor(flat, [allPixels.Count, channels, size, size]).to(model.LanguageModel.DType, model.LanguageModel.Device);
            imageEmbeds = model.EncodeImages(pixels);
        }
        int image = 0;
        foreach (var request in admitted)
        {
            int count = request.Pixels.Length;
            try
            {
                var embeds = InferencePipeline.PromptEmbeddings(model, request.ExpandedIds, count == 0 ? null : imageEmbeds!.narrow(0, image, count));  // (1, T, D)
                int row = session!.Add(embeds, request.ExpandedIds, request.Request.Options.MaxNewTokens);
                request.Row = row;
                lock (gate) rows[row] = request;
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref failed);
                request.Fail(e);
            }
            image += count;
        }
    }

    private void DropWithdrawn()
    {
        foreach (var (row, stream) in rows.Where(kv => kv.Value.IsWithdrawn).ToList())
        {
            session!.Remove(row);
            lock (gate) rows.Remove(row);
            Interlocked.Increment(ref cancelled);
            stream.Fail(new OperationCanceledException("the request was withdrawn"));
        }
    }

    private void StepOnce()
    {
        int batch = session!.Count;
        var results = session.Step();
        Interlocked.Increment(ref steps);
        lock (gate) largestBatch = Math.Max(largestBatch, batch);
        foreach (var result in results)
        {
            if (!rows.TryGetValue(result.Row, out var stream)) continue;
            if (result.Token >= 0) stream.Deliver(result.Token);
            if (result.Finish is not { } finish) continue;
            lock (gate) rows.Remove(result.Row);
            Interlocked.Increment(ref completed);
            stream.Finish(finish);
        }
    }

    /// <summary>A step failed (a bug or out of memory): every running row gets the error, and the batch starts afresh.</summary>
    private void FailAll(Exception error)
    {
        List<GenerationStream> failing;
        lock (gate)
        {
            failing = [.. rows.Values];
            rows.Clear();
        }
        foreach (var stream in failing)
        {
            Interlocked.Increment(ref failed);
            stream.Fail(error);
        }
        session?.Dispose();
        session = null;
    }

    /// <summary>Rows may share a batch when everything but the token limit decodes alike (and no seed asks to be alone).</summary>
    internal static bool CanShareBatch(GenerationOptions a, GenerationOptions b) =>
        a.DoSample == b.DoSample && a.Temperature == b.Temperature && a.TopK == b.TopK && a.TopP == b.TopP
        && a.RepetitionPenalty == b.RepetitionPenalty && a.NoRepeatNgramSize == b.NoRepeatNgramSize
        && a.NumBeams == b.NumBeams && a.StopTokenIds.SetEquals(b.StopTokenIds)
        && !(a.DoSample && (a.Seed is not null || b.Seed is not null));

    private void Wake()
    {
        try { wake.Release(); }
        catch (ObjectDisposedException) { }          // a client left after shutdown
    }

    public void Dispose()
    {
        if (stopping) return;
        stopping = true;
        Wake();
        worker.Join();
        wake.Dispose();
    }
}
