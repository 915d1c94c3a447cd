using System.Text.Json;

namespace XrayVL.Data.Sources;

/// <summary>
/// XrayGLM's caption files <c>openi-en.json</c> / <c>openi-zh.json</c>: <c>{"annotations": [{"image_id": "N_k", "caption": ...}]}</c>.
/// An id N_k is IU report uid N and the k-th image of that study in iu_projections.csv order (k from 1). Each record
/// becomes one manifest entry (study id "N_k", or "N_k-zh"/"N_k-en" when a folder's files are read together;
/// patient "CXR{N}") with one image; its caption, a rewrite of the whole
/// report, goes into findings. Input: one json file, or a folder whose openi-*.json files are all read. Language
/// comes from the file name ("-zh"/"-en"), else from the text. Images: <c>N_k.png</c> (XrayGLM's naming) or the
/// k-th projection's file in any IU layout.
/// </summary>
public sealed class XrayGlmSource : IReportSource
{
    public string Name => "xrayglm";

    /// <summary>One caption record.</summary>
    public sealed record Caption(string ImageId, string Text);

    public SourceResult Read(SourceOptions options)
    {
        var files = Directory.Exists(options.Input)
            ? Directory.GetFiles(options.Input, "openi-*.json").Order(StringComparer.Ordinal).ToArray()
            : [options.Input];
        if (files.Length == 0) throw new XrayVLException($"{options.Input}: no openi-*.json files in this folder");
        string? projectionsPath = IuProjections.Locate(options.Projections, files[0]);
        var projections = projectionsPath != null ? IuProjections.Load(projectionsPath) : null;
        var folder = options.Images != null ? new IuImageFolder(options.Images) : null;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = folder != null };
        if (projections == null) result.Warnings.Add("no iu_projections.csv found: images are looked up as N_k.png only, views unknown");
        int unjoined = 0;
        var unjoinedExamples = new List<string>();

        foreach (string file in files)
        {
            var captions = ReadCaptions(file);
            string language = options.Language ?? LanguageOf(file, captions);
            foreach (var caption in captions)
            {
                result.Records++;
                if (!TryParseId(caption.ImageId, out string uid, out int k))
                    throw new XrayVLException($"{file}: image_id '{caption.ImageId}' is not of the form N_k");
                string text = ReportCleaner.Clean(caption.Text);
                if (text.Length == 0)
                {
                    result.NoteEmptyReport($"{caption.ImageId} ({Path.GetFileName(file)})");
                    continue;
                }
                // The k-th image of study N, when the projections list has one.
                string? projectionFile = null, view = null;
                if (projections != null)
                {
                    var list = projections.ForUid(uid);
                    if (k <= list.Count) (projectionFile, view) = list[k - 1];
                    else
                    {
                        unjoined++;
                        if (unjoinedExamples.Count < options.MaxListed) unjoinedExamples.Add(caption.ImageId);
                    }
                }
                string xrayGlmName = caption.ImageId + ".png";
                var image = projectionFile != null
                    ? IuCommon.Resolve(folder, projectionFile, view, xrayGlmName)
                    : IuCommon.Resolve(folder, xrayGlmName, view);
                var study = new Study
                {
                    // Several files (a folder with openi-en.json and openi-zh.json) hold the same ids: tell them apart.
                    StudyId = files.Length > 1 ? $"{caption.ImageId}-{language}" : caption.ImageId,
                    PatientId = IuCommon.StudyId(uid),
                    Findings = text,
                    Language = language,
                    Source = Name,
                    Meta = new Dictionary<string, string> { ["iu_uid"] = uid, ["image_index"] = k.ToString() },
                };
                result.Add(study, [image], options.KeepMissingImages);
            }
        }
        if (unjoined > 0)
            result.Warnings.Add($"{unjoined} ids name an image number beyond the study's images in iu_projections.csv " +
                                $"(e.g. {string.Join(", ", unjoinedExamples)}); their images are looked up as N_k.png");
        return result;
    }

    /// <summary>Reads the caption records of one XrayGLM json file.</summary>
    public static IReadOnlyList<Caption> ReadCaptions(string path)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        using (var doc = Json.ReadDocument(path, "XrayGLM caption"))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("annotations", out var list)
                || list.ValueKind != JsonValueKind.Array)
                throw new XrayVLException($"{path}: expected {{\"annotations\": [...]}} (XrayGLM caption file)");
            var captions = new List<Caption>(list.GetArrayLength());
            int i = 0;
            foreach (var a in list.EnumerateArray())
            {
                string? id = a.TryGetProperty("image_id", out var idEl) ? idEl.ToString() : null;
                string? text = a.TryGetProperty("caption", out var cEl) && cEl.ValueKind == JsonValueKind.String ? cEl.GetString() : null;
                if (id == null || text == null) throw new XrayVLException($"{path}: annotation {i} lacks image_id or caption");
                captions.Add(new Caption(id, text));
                i++;
            }
            return captions;
        }
    }

    public static bool TryParseId(string id, out string uid, out int k)
    {
        uid = "";
        k = 0;
        int us = id.LastIndexOf('_');
        if (us <= 0 || !int.TryParse(id[(us + 1)..], out k) || k < 1) return false;
        uid = id[..us];
        return uid.All(char.IsAsciiDigit);
    }

    private static string LanguageOf(string file, IReadOnlyList<Caption> captions)
    {
        string name = Path.GetFileNameWithoutExtension(file).ToLowerInvariant();
        if (name.EndsWith("-zh") || name.EndsWith("_zh")) return "zh";
        if (name.EndsWith("-en") || name.EndsWith("_en")) return "en";
        return Labeler.Labeler.DetectLanguage(string.Concat(captions.Take(20).Select(c => c.Text)));
    }
}
