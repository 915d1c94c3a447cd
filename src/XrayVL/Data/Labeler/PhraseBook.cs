using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;

namespace XrayVL.Data.Labeler;

/// <summary>
/// The phrase lists of one language, compiled to one regex per observation and role. English starts from the CheXpert
/// lists (embedded unchanged under phrases/chexpert/, MIT) plus this project's additions (phrases/en-project.txt);
/// Chinese uses this project's own lists (phrases/zh.txt). Section syntax is described at the top of those files.
/// </summary>
internal sealed class PhraseBook
{
    /// <summary>Mentions that name a finding ("effusion"); index = (int)Observation. Null where a language has none.</summary>
    public required Regex?[] Mentions { get; init; }
    /// <summary>Mentions that name a structure and need a size qualifier ("heart size").</summary>
    public required Regex?[] Attributes { get; init; }
    /// <summary>Phrases that contain a mention but are not the finding ("pericardial effusion").</summary>
    public required Regex?[] Unmentions { get; init; }
    /// <summary>Abnormalities outside the 14: positive ones keep No Finding from being positive.</summary>
    public required Regex Other { get; init; }
    public Regex? OtherUnmention { get; init; }
    /// <summary>Whole-report normal statements (evidence for No Finding).</summary>
    public required Regex Normal { get; init; }

    private static readonly string[] ChexpertFiles =
    [
        "no_finding", "enlarged_cardiomediastinum", "cardiomegaly", "lung_lesion", "lung_opacity", "edema",
        "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural_effusion", "pleural_other",
        "fracture", "support_devices",
    ];

    // English words the CheXpert lists hold as whole words: an open ending would catch other words
    // ("tube" → "tuberculosis", "mass" → "massive", "plate" → "plateau").
    private static readonly HashSet<string> ClosedEnglishWords =
        ["tube", "mass", "plate", "lump", "support", "icd", "chf", "lines", "coil", "valve", "port", "marker", "screw"];

    private static readonly Lazy<PhraseBook> EnglishBook = new(BuildEnglish);
    private static readonly Lazy<PhraseBook> ChineseBook = new(BuildChinese);

    public static PhraseBook English => EnglishBook.Value;
    public static PhraseBook Chinese => ChineseBook.Value;

    private static PhraseBook BuildEnglish()
    {
        var sections = new Sections();
        for (int i = 0; i < ChexpertFiles.Length; i++)
        {
            // CheXpert's "no_finding" mention list holds other abnormalities; it is used as such (see [other]).
            string role = i == (int)Observation.NoFinding ? "other" : "mention " + Observations.Names[i];
            sections.Add(role, ReadLines($"phrases/chexpert/mention/{ChexpertFiles[i]}.txt"));
            string unmention = $"phrases/chexpert/unmention/{ChexpertFiles[i]}.txt";
            if (ResourceExists(unmention)) sections.Add("unmention " + Observations.Names[i], ReadLines(unmention));
        }
        sections.AddFile(ReadLines("phrases/en-project.txt"), "phrases/en-project.txt");
        return sections.Compile(EnglishPattern, RegexOptions.None);
    }

    private static PhraseBook BuildChinese()
    {
        var sections = new Sections();
        sections.AddFile(ReadLines("phrases/zh.txt"), "phrases/zh.txt");
        return sections.Compile(Regex.Escape, RegexOptions.None);
    }

    /// <summary>
    /// One English phrase as a regex: starts at a word start; "_" at either end marks a word boundary there; the end
    /// takes plural/derived endings ("effusion" → "effusions", "opaci" → "opacities", "density" → "densities"),
    /// except for whole words in <see cref="ClosedEnglishWords"/> and "_"-terminated phrases, which take only -s/-es.
    /// </summary>
    internal static string EnglishPattern(string phrase)
    {
        bool closedEnd = phrase.EndsWith('_');
        string core = phrase.Trim('_').Trim();
        string lastWord = core.Split(' ').Last();
        closedEnd |= ClosedEnglishWords.Contains(lastWord);
        var body = new StringBuilder();
        string stem = core;
        string ending;
        if (closedEnd) ending = "(?:s|es)?";
        else if (core.EndsWith('y') && core.Length > 3) { stem = core[..^1]; ending = "(?:y|ies)"; }
        else ending = "[a-z]*";
        foreach (string word in stem.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (body.Length > 0) body.Append(@"[\s-]+");
            body.Append(Regex.Escape(word));
        }
        return $"(?<![a-z]){body}{ending}(?![a-z])";
    }

    private static bool ResourceExists(string name) => typeof(PhraseBook).Assembly.GetManifestResourceInfo(name) != null;

    private static IReadOnlyList<string> ReadLines(string name)
    {
        using var stream = typeof(PhraseBook).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded phrase list {name} is missing from the XrayVL assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToList();
    }

    /// <summary>Phrases collected per role ("mention Cardiomegaly", "other", ...) before compiling.</summary>
    private sealed class Sections
    {
        private readonly Dictionary<string, List<string>> phrases = [];

        public void Add(string role, IEnumerable<string> lines)
        {
            if (!phrases.TryGetValue(role, out var list)) phrases[role] = list = [];
            foreach (string line in lines)
            {
                string p = line.Trim().ToLowerInvariant();
                if (p.Length > 0 && !p.StartsWith('#') && !list.Contains(p)) list.Add(p);
            }
        }

        public void AddFile(IReadOnlyList<string> lines, string name)
        {
            string? role = null;
            for (int i = 0; i < lines.Count; i++)
            {
                string line = lines[i].Trim();
                if (line.Length == 0 || line.StartsWith('#')) continue;
                if (line.StartsWith('[') && line.EndsWith(']'))
                {
                    role = line[1..^1].Trim();
                    string[] parts = role.Split(' ', 2);
                    bool valid = parts[0] switch
                    {
                        "mention" or "attribute" or "unmention" => parts.Length == 2 && (parts[1] == "other" || Observations.TryParse(parts[1], out _)),
                        "other" or "normal" => parts.Length == 1,
                        _ => false,
                    };
                    if (!valid) throw new InvalidOperationException($"{name}:{i + 1}: unknown section [{role}]");
                    if (parts.Length == 2 && parts[1] != "other") role = parts[0] + " " + Observations.Parse(parts[1]).Name();
                    continue;
                }
                if (role == null) throw new InvalidOperationException($"{name}:{i + 1}: phrase outside a section");
                Add(role, [line]);
            }
        }

        public PhraseBook Compile(Func<string, string> pattern, RegexOptions options)
        {
            // Attribute phrases are taken out of the plain mention lists: they need a qualifier to count.
            var attributeSet = phrases.Where(kv => kv.Key.StartsWith("attribute ")).SelectMany(kv => kv.Value).ToHashSet();
            Regex? Build(string role, bool dropAttributes = false)
            {
                if (!phrases.TryGetValue(role, out var list)) return null;
                var chosen = list.Where(p => !(dropAttributes && attributeSet.Contains(p)))
                    .OrderByDescending(p => p.Length)  // longest first: alternation takes the first that matches
                    .Select(pattern).ToList();
                return chosen.Count == 0 ? null
                    : new Regex(string.Join("|", chosen), options | RegexOptions.Compiled | RegexOptions.CultureInvariant);
            }
            return new PhraseBook
            {
                Mentions = Observations.All.Select(o => Build("mention " + o.Name(), dropAttributes: true)).ToArray(),
                Attributes = Observations.All.Select(o => Build("attribute " + o.Name())).ToArray(),
                Unmentions = Observations.All.Select(o => Build("unmention " + o.Name())).ToArray(),
                Other = Build("other", dropAttributes: true) ?? new Regex("(?!)"),
                OtherUnmention = Build("unmention other"),
                Normal = Build("normal") ?? new Regex("(?!)"),
            };
        }
    }
}
