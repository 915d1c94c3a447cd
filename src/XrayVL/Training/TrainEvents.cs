namespace XrayVL.Training;

/// <summary>
/// What the trainer reports while it runs, through an <see cref="IProgress{T}"/> of this type; a front end switches
/// on the subtype (the CLI draws a progress bar from <see cref="StepCompleted"/> and prints the rest).
/// Reports are made synchronously on the training thread.
/// </summary>
public abstract record TrainEvent;

/// <summary>A line worth showing: data counts, what was left out, resume decisions, measured speeds.</summary>
public sealed record TrainNote(string Message) : TrainEvent;

/// <summary>A stage begins (or resumes at <paramref name="StartStep"/>).</summary>
public sealed record StageStarted(
    int Index, int Count, string Name, string Kind, string Trainable, long TotalSteps, long StartStep,
    int TrainSamples, int ValSamples, long TrainableParameters, bool FeatureCache) : TrainEvent;

/// <summary>Where training stands after an optimizer step.</summary>
/// <param name="Step">Step within the stage, from 1.</param>
/// <param name="GlobalStep">Steps over all stages so far (checkpoints and metrics are numbered by it).</param>
/// <param name="Loss">Mean loss over the step's learned tokens (all micro-batches).</param>
/// <param name="TokensPerSecond">Non-padding tokens per second, averaged over recent steps.</param>
/// <param name="Eta">Time left in this stage at the recent pace.</param>
public sealed record TrainProgress(
    string Stage, int StageIndex, int StageCount, long Step, long TotalSteps, long GlobalStep, int Epoch,
    double Loss, double LearningRate, double GradNorm, double TokensPerSecond, double StepsPerSecond,
    TimeSpan Elapsed, TimeSpan Eta);

public sealed record StepCompleted(TrainProgress Progress) : TrainEvent;

/// <summary>A validation loss; <paramref name="IsBest"/> when it is the stage's lowest so far (OUT/best was replaced).</summary>
public sealed record Evaluated(string Stage, long Step, long GlobalStep, double ValLoss, bool IsBest) : TrainEvent;

/// <summary>One generation from a validation prompt, beside the reference answer.</summary>
public sealed record GeneratedSample(string Prompt, string Generated, string Reference, string Language, IReadOnlyList<string> Images);

public sealed record SamplesGenerated(string Stage, long Step, long GlobalStep, IReadOnlyList<GeneratedSample> Samples) : TrainEvent;

/// <summary>A checkpoint folder was written; <paramref name="Reason"/> is "every N steps", "end of stage" or "cancelled".</summary>
public sealed record CheckpointSaved(string Path, long GlobalStep, string Reason) : TrainEvent;

/// <summary>A stage ended: its speed and, for stages with a frozen encoder, the feature cache's account.</summary>
public sealed record StageCompleted(StageSummary Summary) : TrainEvent;

/// <summary>What one stage did, as the run's result lists it.</summary>
public sealed record StageSummary(
    string Name, long Steps, double? LastLoss, double? LastValLoss, double? BestValLoss, TimeSpan Elapsed,
    double StepsPerSecond, double TokensPerSecond, int? CachedFeatureImages, int? EncodedImages);

/// <summary>The run's outcome: the final model folder (plain weights, LoRA merged) and the best-by-validation folder.</summary>
public sealed record TrainResult(string ModelDirectory, string? BestDirectory, long GlobalSteps, IReadOnlyList<StageSummary> Stages);
