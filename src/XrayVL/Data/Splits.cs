namespace XrayVL.Data;

/// <summary>
/// Patient-level train/val/test splits. <see cref="ByPatient"/> is deterministic for a seed and does not depend on the
/// order of the studies: each patient group is ranked by a hash of (seed, patient id) and the ranking is cut by the
/// fractions. Patients that share an image file (the COVID metadata lists some images under two patient ids) are one
/// group, so no image lands in two splits either.
/// </summary>
public static class Splits
{
    public const string Train = "train";
    public const string Val = "val";
    public const string Test = "test";

    public static readonly IReadOnlyList<string> Names = [Train, Val, Test];

    /// <summary>"train"/"training" → train, "val"/"valid"/"validate"/"validation"/"dev" → val, "test"/"testing" → test; else null.</summary>
    public static string? NormalizeName(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        "train" or "training" => Train,
        "val" or "valid" or "validate" or "validation" or "dev" => Val,
        "test" or "testing" => Test,
        _ => null,
    };

    /// <summary>Assigns every study a split by patient. Fractions are (train, val, test) and must sum to 1.</summary>
    public static List<Study> ByPatient(IReadOnlyList<Study> studies, int seed, (double Train, double Val, double Test) fractions)
    {
        var (ft, fv, fs) = fractions;
        if (ft < 0 || fv < 0 || fs < 0 || Math.Abs(ft + fv + fs - 1) > 1e-6)
            throw new XrayVLException($"split fractions {ft}/{fv}/{fs} must be non-negative and sum to 1");

        var groups = PatientGroups(studies);
        // Rank groups by a seeded hash of their smallest patient id: stable across runs and input orders.
        var ranked = groups.Values.Distinct()
            .Select(g => (Group: g, Key: Hash(seed, g)))
            .OrderBy(x => x.Key).ThenBy(x => x.Group, StringComparer.Ordinal)
            .Select(x => x.Group).ToList();
        int n = ranked.Count;
        int nTrain = (int)Math.Round(n * ft);
        int nVal = Math.Min(n - nTrain, (int)Math.Round(n * fv));
        var splitOf = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++) splitOf[ranked[i]] = i < nTrain ? Train : i < nTrain + nVal ? Val : Test;
        return studies.Select(s => s with { Split = splitOf[groups[s.PatientId]] }).ToList();
    }

    /// <summary>Sets splits from a study id → split map (an official split), falling back to the patient id; unlisted studies get none.</summary>
    public static List<Study> Apply(IReadOnlyList<Study> studies, IReadOnlyDictionary<string, string> splitByStudy) =>
        studies.Select(s => s with
        {
            Split = splitByStudy.TryGetValue(s.StudyId, out var sp) || splitByStudy.TryGetValue(s.PatientId, out sp) ? sp : null,
        }).ToList();

    /// <summary>Patients found in more than one split (empty for a sound split).</summary>
    public static IReadOnlyList<string> PatientsInSeveralSplits(IEnumerable<Study> studies) =>
        studies.Where(s => s.Split != null).GroupBy(s => s.PatientId)
            .Where(g => g.Select(s => s.Split).Distinct().Count() > 1).Select(g => g.Key).ToList();

    /// <summary>Patient id → group name (the smallest patient id of the group); patients sharing an image path are joined.</summary>
    private static Dictionary<string, string> PatientGroups(IReadOnlyList<Study> studies)
    {
        var parent = new Dictionary<string, string>(StringComparer.Ordinal);
        string Find(string x)
        {
            while (parent[x] != x) x = parent[x] = parent[parent[x]];
            return x;
        }
        void Union(string a, string b)
        {
            string ra = Find(a), rb = Find(b);
            if (ra == rb) return;
            if (string.CompareOrdinal(ra, rb) < 0) parent[rb] = ra; else parent[ra] = rb;
        }
        foreach (var s in studies) parent.TryAdd(s.PatientId, s.PatientId);
        var ownerOfImage = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var s in studies)
        {
            foreach (var image in s.Images)
            {
                if (ownerOfImage.TryGetValue(image.Path, out var other)) Union(other, s.PatientId);
                else ownerOfImage[image.Path] = s.PatientId;
            }
        }
        return parent.Keys.ToDictionary(p => p, Find, StringComparer.Ordinal);
    }

    /// <summary>64-bit FNV-1a of the seed and the text: the same on every platform and run (string.GetHashCode is not).</summary>
    private static ulong Hash(int seed, string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in BitConverter.GetBytes(seed)) h = (h ^ b) * 1099511628211UL;
        foreach (char c in text)
        {
            h = (h ^ (byte)c) * 1099511628211UL;
            h = (h ^ (byte)(c >> 8)) * 1099511628211UL;
        }
        // Final avalanche so that nearby ids ("CXR10", "CXR11") spread out.
        h ^= h >> 33; h *= 0xff51afd7ed558ccdUL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53UL; h ^= h >> 33;
        return h;
    }
}
