namespace XrayVL.Training;

/// <summary>The learning-rate schedule: linear warmup from 0, then a half cosine from the peak down to a floor.</summary>
public static class Schedule
{
    /// <summary>
    /// The rate for optimizer step <paramref name="step"/> (1-based: the first update is step 1) of
    /// <paramref name="totalSteps"/>: <c>lr · step / warmup</c> during the <paramref name="warmupSteps"/> warmup steps, then
    /// <c>minLr + (lr − minLr) · ½(1 + cos(π · progress))</c>, progress going 0 → 1 from the end of warmup to the last step.
    /// Steps past the end stay at <paramref name="minLr"/>.
    /// </summary>
    public static double LearningRate(long step, long totalSteps, long warmupSteps, double lr, double minLr)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "steps count from 1");
        if (totalSteps < 1) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "a schedule needs at least one step");
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "warmup cannot be negative");
        if (step <= warmupSteps) return lr * step / warmupSteps;
        if (step >= totalSteps) return minLr;
        double progress = (double)(step - warmupSteps) / (totalSteps - warmupSteps);   // in (0, 1)
        return minLr + (lr - minLr) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
