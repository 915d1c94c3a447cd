namespace XrayVL.Imaging;

/// <summary>
/// Stored DICOM pixel values → display values in [0, 1], as a viewer shows a radiograph: the modality transform, the
/// VOI transform (window or VOI LUT, else a robust percentile window) and MONOCHROME1 inversion. Parsing the file and
/// extracting the stored values is <see cref="Dicom"/>'s job.
/// </summary>
public static class DicomRendering
{
    internal static int MinStored(DicomDataset ds) => ds.Signed ? -(1 << (ds.BitsStored - 1)) : 0;
    internal static int MaxStored(DicomDataset ds) => ds.Signed ? (1 << (ds.BitsStored - 1)) - 1 : (1 << ds.BitsStored) - 1;


    /// <summary>
    /// Stored values → [0, 1] through a look-up table over all possible stored values (at most 2^16): modality transform
    /// (the Modality LUT Sequence, else rescale slope/intercept), VOI transform (the file's window, else its VOI LUT
    /// Sequence, else a robust 0.5–99.5 percentile window), MONOCHROME1 inversion. Padding pixels are black and do not
    /// count for the percentile window.
    /// </summary>
    internal static float[] Monochrome(int[] stored, DicomDataset ds, int minStored, int maxStored)
    {
        double slope = ds.RescaleSlope, intercept = ds.RescaleIntercept;
        var modalityLut = ds.ModalityLut;
        Func<int, double> modality = modalityLut is null ? s => s * slope + intercept : s => modalityLut.Apply(s);
        var padding = ds.Padding;
        bool IsPadding(int s) => padding is { } p && s >= p.Low && s <= p.High;
        Func<double, double> window;
        if (ds.WindowCenter is { } c && ds.WindowWidth is { } w)
            window = x => ApplyWindow(x, c, w, ds.VoiLutFunction);
        else if (ds.VoiLut is { } voi)
        {
            double top = (1 << voi.Bits) - 1;
            window = x => voi.Apply((int)Math.Round(x)) / top;
        }
        else
        {
            var (lowStored, highStored) = PercentileRange(stored, minStored, maxStored, 0.005, 0.995, padding);
            double a = modality(lowStored), b = modality(highStored);
            double lo = Math.Min(a, b), hi = Math.Max(a, b);
            window = hi > lo ? x => Math.Clamp((x - lo) / (hi - lo), 0, 1) : _ => 0;
        }
        bool invert = ds.PhotometricInterpretation == "MONOCHROME1";
        var lut = new float[maxStored - minStored + 1];
        for (int s = minStored; s <= maxStored; s++)
        {
            double y = window(modality(s));
            lut[s - minStored] = IsPadding(s) ? 0f : (float)(invert ? 1 - y : y);
        }
        var pixels = new float[stored.Length];
        for (int i = 0; i < stored.Length; i++) pixels[i] = lut[stored[i] - minStored];
        return pixels;
    }

    /// <summary>PS3.3 C.11.2.1.2 VOI LUT functions, output range [0, 1].</summary>
    public static double ApplyWindow(double x, double center, double width, string function = "LINEAR")
    {
        switch (function)
        {
            case "LINEAR_EXACT":
                return Math.Clamp((x - center) / width + 0.5, 0, 1);
            case "SIGMOID":
                return 1 / (1 + Math.Exp(-4 * (x - center) / width));
            default:
                if (x <= center - 0.5 - (width - 1) / 2) return 0;
                if (x > center - 0.5 + (width - 1) / 2) return 1;
                return (x - (center - 0.5)) / (width - 1) + 0.5;
        }
    }

    /// <summary>
    /// The stored values at ranks ⌊p_lo·(n−1)⌋ and ⌈p_hi·(n−1)⌉ of the sorted pixels (a histogram, not a sort); when
    /// they coincide (a nearly flat image), the full minimum and maximum.
    /// </summary>
    internal static (int Low, int High) PercentileRange(int[] stored, int minStored, int maxStored, double pLow, double pHigh,
        (int Low, int High)? padding = null)
    {
        var histogram = new int[maxStored - minStored + 1];
        foreach (int s in stored) histogram[s - minStored]++;
        if (padding is { } p)
            for (int s = Math.Max(p.Low, minStored); s <= Math.Min(p.High, maxStored); s++) histogram[s - minStored] = 0;
        long n = histogram.Sum(h => (long)h);
        if (n == 0) return (minStored, maxStored);
        long lowRank = (long)Math.Floor(pLow * (n - 1)), highRank = (long)Math.Ceiling(pHigh * (n - 1));
        int low = ValueAtRank(histogram, lowRank) + minStored, high = ValueAtRank(histogram, highRank) + minStored;
        if (high <= low) (low, high) = (ValueAtRank(histogram, 0) + minStored, ValueAtRank(histogram, n - 1) + minStored);
        return (low, high);
    }

    private static int ValueAtRank(int[] histogram, long rank)
    {
        long seen = 0;
        for (int i = 0; i < histogram.Length; i++)
        {
            seen += histogram[i];
            if (seen > rank) return i;
        }
        return histogram.Length - 1;
    }
}
