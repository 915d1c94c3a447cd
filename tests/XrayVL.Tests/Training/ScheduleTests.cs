using XrayVL.Training;

namespace XrayVL.Tests.Training;

public class ScheduleTests
{
    [Theory]
    // warmup 10 of 110 steps, peak 1e-3, floor 1e-4: linear up, then a half cosine over the 100 steps after warmup.
    [InlineData(1, 1e-4)]                          // 1e-3 · 1/10
    [InlineData(5, 5e-4)]
    [InlineData(10, 1e-3)]                         // end of warmup: the peak
    [InlineData(60, 5.5e-4)]                       // halfway through the cosine: (peak + floor) / 2
    [InlineData(35, 8.681980515339464e-4)]         // a quarter: floor + 0.9e-3 · (1 + cos(π/4)) / 2
    [InlineData(110, 1e-4)]                        // last step: the floor
    [InlineData(500, 1e-4)]                        // past the end: stays at the floor
    public void WarmupThenCosineToTheFloor(long step, double expected) =>
        Assert.Equal(expected, Schedule.LearningRate(step, totalSteps: 110, warmupSteps: 10, lr: 1e-3, minLr: 1e-4), 12);

    [Fact]
    public void WithoutWarmupTheFirstStepIsNearThePeakAndTheCurveNeverRises()
    {
        double first = Schedule.LearningRate(1, 100, 0, 1.0, 0.0);
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI / 100)), first, 12);
        double previous = double.MaxValue;
        for (long s = 1; s <= 100; s++)
        {
            double lr = Schedule.LearningRate(s, 100, 0, 1.0, 0.0);
            Assert.True(lr <= previous && lr >= 0);
            previous = lr;
        }
    }

    [Fact]
    public void WarmupLongerThanTheRunOnlyRises()
    {
        Assert.Equal(0.25, Schedule.LearningRate(1, 3, 4, 1.0, 0.1), 12);
        Assert.Equal(0.75, Schedule.LearningRate(3, 3, 4, 1.0, 0.1), 12);
    }

    [Fact]
    public void StepsCountFromOne() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Schedule.LearningRate(0, 10, 1, 1e-3, 0));
}
