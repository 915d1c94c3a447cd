using System.Text.RegularExpressions;

namespace XrayVL.Data.Sources;

/// <summary>
/// Finds IU chest X-ray image files under an image folder, whichever naming the copy uses: the Kaggle/R2Gen-CSV names
/// (<c>1_IM-0001-4001.dcm.png</c>, also under <c>images/images_normalized/</c>), the Open-i names
/// (<c>NLMCXR_png/CXR1_1_IM-0001-4001.png</c>), the MRG-style names (<c>CXR1_IM-0001-4001.png</c>) and XrayGLM's
/// <c>N_k.png</c>. Names are compared by a normalized key (uid + IM part), so any of them finds the same file.
/// </summary>
internal sealed partial class IuImageFolder
{
    private static readonly string[] Layouts = ["", "images/images_normalized", "images_normalized", "NLMCXR_png", "images"];
    private static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".dcm"];

    private Dictionary<string, string>? index;

    public string Root { get; }

    public IuImageFolder(string root)
    {
        if (!Directory.Exists(root)) throw new XrayVLException($"{root}: image folder not found");
        Root = Path.GetFullPath(root);
    }

    /// <summary>Where an image would be in the plain layout; used to name a missing image.</summary>
    public string Expected(string name) => Path.Combine(Root, name);

    /// <summary>The full path of the first existing file for any of the names, or null.</summary>
    public string? Find(params string[] names)
    {
        foreach (string name in names)
        {
            foreach (string layout in Layouts)
            {
                string p = Path.Combine(Root, layout, name);
                if (File.Exists(p)) return p;
            }
        }
        // By key, for IU-style names only: a bare "0.png" (R2Gen's layout) says nothing without its folder.
        foreach (string name in names)
        {
            string key = Key(name);
            if (!IuKey().IsMatch(key)) continue;
            index ??= BuildIndex();
            if (index.TryGetValue(key, out var p)) return p;
        }
        return null;
    }

    private Dictionary<string, string> BuildIndex()
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        var options = new EnumerationOptions { RecurseSubdirectories = true, MaxRecursionDepth = 4, IgnoreInaccessible = true };
        foreach (string file in Directory.EnumerateFiles(Root, "*", options).Order(StringComparer.Ordinal))
        {
            string ext = Path.GetExtension(file).ToLowerInvariant();
            if (!Extensions.Contains(ext)) continue;
            d.TryAdd(Key(Path.GetFileName(file)), file);
        }
        return d;
    }

    /// <summary>"CXR1_1_IM-0001-4001.png", "1_IM-0001-4001.dcm.png", "CXR1_IM-0001-4001.png" → "1_im-0001-4001"; "12_3.png" → "12_3".</summary>
    public static string Key(string fileName)
    {
        string name = Path.GetFileName(fileName).ToLowerInvariant();
        foreach (string ext in Extensions.Concat([".dcm"]))
        {
            if (name.EndsWith(ext)) name = name[..^ext.Length];
        }
        var m = IuName().Match(name);
        return m.Success ? $"{m.Groups[1].Value}_{m.Groups[2].Value}" : name;
    }

    [GeneratedRegex(@"^(?:cxr)?(\d+)(?:_\d+)?_(im-[\d-]+)$")]
    private static partial Regex IuName();

    [GeneratedRegex(@"^\d+_(?:im-[\d-]+|\d+)$")]
    private static partial Regex IuKey();
}

/// <summary>IU iu_projections.csv: for each report uid, its image files (in file order) and their views.</summary>
internal sealed class IuProjections
{
    private readonly Dictionary<string, List<(string File, string? View)>> byUid = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string?> viewByKey = new(StringComparer.Ordinal);

    public int Rows { get; private set; }

    public static IuProjections Load(string path)
    {
        var p = new IuProjections();
        foreach (var row in Csv.Read(path, "uid", "filename", "projection"))
        {
            string uid = row["uid"].Trim();
            string file = row["filename"].Trim();
            if (uid.Length == 0 || file.Length == 0) throw new XrayVLException($"{path}:{row.Line}: empty uid or filename");
            string? view = Views.Normalize(row["projection"]);
            if (!p.byUid.TryGetValue(uid, out var list)) p.byUid[uid] = list = [];
            list.Add((file, view));
            p.viewByKey.TryAdd(IuImageFolder.Key(file), view);
            p.Rows++;
        }
        return p;
    }

    public IReadOnlyList<(string File, string? View)> ForUid(string uid) =>
        byUid.TryGetValue(uid, out var list) ? list : [];

    public string? ViewOf(string fileName) => viewByKey.GetValueOrDefault(IuImageFolder.Key(fileName));

    /// <summary>The projections file: the given path, else iu_projections.csv (or indiana_projections.csv) beside any of the paths or one folder up.</summary>
    public static string? Locate(string? given, params string?[] near)
    {
        if (given != null) return File.Exists(given) ? given : throw new XrayVLException($"{given}: projections file not found");
        foreach (string? n in near)
        {
            if (n == null) continue;
            string dir = Directory.Exists(n) ? n : Path.GetDirectoryName(Path.GetFullPath(n)) ?? ".";
            // The folder itself, then its parent (split files often sit in a splits/ folder beside the CSVs).
            foreach (string d in new[] { dir, Path.GetDirectoryName(Path.GetFullPath(dir)) ?? dir })
            {
                foreach (string name in new[] { "iu_projections.csv", "indiana_projections.csv" })
                {
                    string p = Path.Combine(d, name);
                    if (File.Exists(p)) return p;
                }
            }
        }
        return null;
    }
}

/// <summary>Shared steps of the IU readers.</summary>
internal static class IuCommon
{
    /// <summary>"CXR12" for report uid 12: the study and patient id of IU studies in every IU source.</summary>
    public static string StudyId(string uid) => "CXR" + uid;

    /// <summary>The report uid in an IU id: "CXR2384_IM-0942" → "2384", "3321" → "3321", "CXR12" → "12", "12_3" → "12".</summary>
    public static string? UidOf(string id)
    {
        var m = Regex.Match(id.Trim(), @"^(?:CXR)?(\d+)(?:[_/].*)?$", RegexOptions.IgnoreCase);
        return m.Success ? m.Groups[1].Value : null;
    }

    public static ResolvedImage Resolve(IuImageFolder? folder, string name, string? view, params string[] alternatives)
    {
        if (folder == null) return new ResolvedImage(new StudyImage(name, view), null);
        string? found = folder.Find([name, .. alternatives]);
        return found != null
            ? new ResolvedImage(new StudyImage(found, view), true)
            : new ResolvedImage(new StudyImage(folder.Expected(name), view), false);
    }
}
