namespace XrayVL.Data.Sources;

/// <summary>A reader of one published dataset layout that turns it into manifest studies.</summary>
public interface IReportSource
{
    /// <summary>The name used on the command line: iu-csv, openi-xml, xrayglm, r2gen, mimic, covid, kermany, nih14, jsonl.</summary>
    string Name { get; }

    SourceResult Read(SourceOptions options);
}

/// <summary>What a source reads. Paths the source can find by itself (beside <see cref="Input"/>) may be left null.</summary>
public sealed record SourceOptions
{
    /// <summary>The source's main file or folder (see each source for which).</summary>
    public required string Input { get; init; }
    /// <summary>The image folder. When null, image paths are written as the source names them and not checked.</summary>
    public string? Images { get; init; }
    /// <summary>IU iu_projections.csv (uid → file → Frontal/Lateral); looked for beside the input when null.</summary>
    public string? Projections { get; init; }
    /// <summary>
    /// An official split: mimic-cxr-2.0.0-split.csv(.gz), read by the MIMIC source (found beside the images when null);
    /// for the other sources an R2Gen-style annotation.json that <see cref="DatasetBuilder"/> applies by study, then patient id.
    /// </summary>
    public string? SplitFile { get; init; }
    /// <summary>MIMIC mimic-cxr-2.0.0-metadata.csv(.gz) for view positions; looked for beside the images when null.</summary>
    public string? Metadata { get; init; }
    /// <summary>Overrides the language the source would assign ("en"/"zh").</summary>
    public string? Language { get; init; }
    /// <summary>Keep images that are not on disk (and studies left without images) instead of leaving them out.</summary>
    public bool KeepMissingImages { get; init; }
    /// <summary>How many missing image paths / skipped records to list by name.</summary>
    public int MaxListed { get; init; } = 10;
}

/// <summary>The studies a source produced, and an account of everything it left out.</summary>
public sealed class SourceResult(string source)
{
    public string Source { get; } = source;
    public List<Study> Studies { get; } = [];
    /// <summary>Records read from the input (report rows, caption records, metadata rows...).</summary>
    public int Records { get; set; }
    /// <summary>Whether image files were looked up on disk (an image folder was given).</summary>
    public bool ImagesChecked { get; set; }
    /// <summary>Images referenced by the studies written (found on disk when checked).</summary>
    public int Images { get; set; }
    /// <summary>Images referenced but not found on disk.</summary>
    public int MissingImages { get; set; }
    public List<string> MissingImageExamples { get; } = [];
    /// <summary>Studies left out because none of their images is on disk (kept, image-less, with KeepMissingImages).</summary>
    public int StudiesWithoutImages { get; set; }
    /// <summary>Records left out because they had no report text.</summary>
    public int EmptyReports { get; set; }
    public List<string> EmptyReportExamples { get; } = [];
    /// <summary>Other things worth a line in the summary (unjoinable ids, repeated images...).</summary>
    public List<string> Warnings { get; } = [];

    internal int MaxListed { get; init; } = 10;

    internal void NoteEmptyReport(string what)
    {
        EmptyReports++;
        if (EmptyReportExamples.Count < MaxListed) EmptyReportExamples.Add(what);
    }

    /// <summary>
    /// Adds a study after checking its images: missing ones are counted and listed, and left out unless
    /// <paramref name="keepMissing"/>; a study with none left is counted and left out too.
    /// </summary>
    internal void Add(Study study, IReadOnlyList<ResolvedImage> images, bool keepMissing)
    {
        var kept = new List<StudyImage>(images.Count);
        foreach (var image in images)
        {
            if (image.Exists == false)
            {
                MissingImages++;
                if (MissingImageExamples.Count < MaxListed) MissingImageExamples.Add(image.Image.Path);
                if (!keepMissing) continue;
            }
            kept.Add(image.Image);
        }
        if (kept.Count == 0 && images.Count > 0 && images.Any(i => i.Exists == false))
        {
            StudiesWithoutImages++;
            if (!keepMissing) return;
        }
        Images += kept.Count;
        Studies.Add(study with { Images = kept });
    }
}

/// <summary>An image path with whether it is on disk (null: not checked).</summary>
internal readonly record struct ResolvedImage(StudyImage Image, bool? Exists);

/// <summary>Picks a source by name: a switch that throws on an unknown name, so a typo is an error, never a silent default.</summary>
public static class ReportSources
{
    public static readonly IReadOnlyList<string> Names = ["iu-csv", "openi-xml", "xrayglm", "r2gen", "mimic", "covid", "kermany", "nih14", "jsonl"];

    public static IReportSource Create(string name) => name switch
    {
        "iu-csv" => new IuCsvSource(),
        "openi-xml" => new OpenIXmlSource(),
        "xrayglm" => new XrayGlmSource(),
        "r2gen" => new R2GenSource(),
        "mimic" => new MimicSource(),
        "covid" => new CovidSource(),
        "kermany" => new KermanySource(),
        "nih14" => new Nih14Source(),
        "jsonl" => new JsonlSource(),
        _ => throw new XrayVLException($"unknown source '{name}'; expected one of: {string.Join(", ", Names)}"),
    };
}
