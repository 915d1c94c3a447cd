using System.Xml;
using System.Xml.Linq;

namespace XrayVL.Data.Sources;

/// <summary>
/// IU X-ray as downloaded from Open-i: <c>ecgen-radiology/*.xml</c> reports + <c>NLMCXR_png/</c> images. Each XML is
/// <c>&lt;eCitation&gt;</c> with <c>&lt;uId id="CXR1"/&gt;</c>, <c>MedlineCitation/Article/Abstract/AbstractText</c>
/// elements labeled INDICATION / COMPARISON / FINDINGS / IMPRESSION, <c>&lt;MeSH&gt;&lt;major&gt;</c> terms, and one
/// <c>&lt;parentImage id="CXR1_1_IM-0001-3001"&gt;</c> per image (file <c>{id}.png</c>). Input: the ecgen-radiology
/// folder, its parent, or one XML file. Views come from iu_projections.csv when one is given or lies beside the input.
/// </summary>
public sealed class OpenIXmlSource : IReportSource
{
    public string Name => "openi-xml";

    public SourceResult Read(SourceOptions options)
    {
        string[] files = ReportFiles(options.Input);
        var folder = options.Images != null ? new IuImageFolder(options.Images) : null;
        string? projectionsPath = IuProjections.Locate(options.Projections, options.Input);
        var projections = projectionsPath != null ? IuProjections.Load(projectionsPath) : null;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = folder != null };
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string file in files)
        {
            result.Records++;
            var parsed = ParseFile(file);
            if (seen.TryGetValue(parsed.Id, out var other))
                throw new XrayVLException($"{file}: report {parsed.Id} also in {other}");
            seen[parsed.Id] = file;
            var report = parsed.Report.Cleaned();
            if (report.IsEmpty)
            {
                result.NoteEmptyReport($"{parsed.Id} ({Path.GetFileName(file)})");
                continue;
            }
            var images = parsed.ImageIds
                .Select(id => IuCommon.Resolve(folder, id + ".png", projections?.ViewOf(id + ".png"), id + ".jpg"))
                .ToList();
            var meta = new Dictionary<string, string>();
            if (parsed.MeshMajor.Count > 0) meta["mesh"] = string.Join(";", parsed.MeshMajor);
            if (parsed.MeshAutomatic.Count > 0) meta["mesh_automatic"] = string.Join(";", parsed.MeshAutomatic);
            var study = Study.FromReport(parsed.Id, parsed.Id, report, options.Language ?? "en", Name) with { Meta = meta };
            result.Add(study, images, options.KeepMissingImages);
        }
        return result;
    }

    internal sealed record ParsedReport(string Id, Report Report, List<string> ImageIds, List<string> MeshMajor, List<string> MeshAutomatic);

    /// <summary>Parses one Open-i report XML; a file that is empty or not XML is an error naming the file.</summary>
    internal static ParsedReport ParseFile(string file)
    {
        var info = new FileInfo(file);
        if (!info.Exists) throw new XrayVLException($"{file}: file not found");
        if (info.Length == 0 || File.ReadAllText(file).Trim().Length == 0) throw new XrayVLException($"{file}: empty report file");
        XDocument doc;
        try { doc = XDocument.Load(file); }
        catch (XmlException e) { throw new XrayVLException($"{file}: not a valid Open-i report XML ({e.Message})", e); }
        var root = doc.Root!;
        if (root.Name.LocalName != "eCitation") throw new XrayVLException($"{file}: root element is <{root.Name.LocalName}>, expected <eCitation>");

        string? id = Attr(root.Element("uId"), "id");
        if (string.IsNullOrWhiteSpace(id))
        {
            string? iuxr = Attr(root.Element("IUXRId"), "id");
            id = !string.IsNullOrWhiteSpace(iuxr) ? "CXR" + iuxr : "CXR" + Path.GetFileNameWithoutExtension(file);
        }
        string Section(string label) => string.Join("\n", root.Descendants("AbstractText")
            .Where(e => string.Equals(Attr(e, "Label"), label, StringComparison.OrdinalIgnoreCase))
            .Select(e => e.Value.Trim()).Where(v => v.Length > 0));
        var report = new Report
        {
            Indication = Section("INDICATION"),
            Comparison = Section("COMPARISON"),
            Findings = Section("FINDINGS"),
            Impression = Section("IMPRESSION"),
        };
        var images = root.Descendants("parentImage").Select(e => Attr(e, "id")).OfType<string>()
            .Where(s => s.Length > 0).Distinct().ToList();
        var mesh = root.Elements("MeSH").ToList();
        var major = mesh.SelectMany(m => m.Elements("major")).Select(e => e.Value.Trim()).Where(v => v.Length > 0).ToList();
        var automatic = mesh.SelectMany(m => m.Elements("automatic")).Select(e => e.Value.Trim()).Where(v => v.Length > 0).ToList();
        return new ParsedReport(id.Trim(), report, images, major, automatic);
    }

    private static string? Attr(XElement? e, string name) => e?.Attribute(name)?.Value;

    private static string[] ReportFiles(string input)
    {
        if (File.Exists(input)) return [input];
        if (!Directory.Exists(input)) throw new XrayVLException($"{input}: not found (expected the ecgen-radiology folder or an XML file)");
        string dir = Directory.Exists(Path.Combine(input, "ecgen-radiology")) ? Path.Combine(input, "ecgen-radiology") : input;
        // Numeric order (1.xml, 2.xml, ..., 10.xml) so manifests list reports as Open-i numbers them.
        var files = Directory.GetFiles(dir, "*.xml")
            .OrderBy(f => int.TryParse(Path.GetFileNameWithoutExtension(f), out int n) ? n : int.MaxValue)
            .ThenBy(f => f, StringComparer.Ordinal).ToArray();
        if (files.Length == 0) throw new XrayVLException($"{dir}: no .xml report files");
        return files;
    }
}
