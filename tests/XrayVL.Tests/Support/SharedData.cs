namespace XrayVL.Tests.Support;

/// <summary>Finds ../shared/data (real public data kept outside the repo) by walking up from the test binaries.</summary>
public static class SharedData
{
    private static readonly Lazy<string?> RootDir = new(() =>
    {
        string? env = Environment.GetEnvironmentVariable("XRAYVL_SHARED_DATA");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "data");
            if (System.IO.File.Exists(Path.Combine(candidate, "PROVENANCE.md"))) return candidate;
        }
        return null;
    });

    /// <summary>The shared data folder; throws with a clear message when it is absent (tests need it, as CI has it).</summary>
    public static string Root => RootDir.Value
        ?? throw new DirectoryNotFoundException("../shared/data not found above the test binaries; set XRAYVL_SHARED_DATA.");

    public static string File(params string[] parts) => Path.Combine([Root, .. parts]);
}
