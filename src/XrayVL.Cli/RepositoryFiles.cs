namespace XrayVL.Cli;

/// <summary>Files shipped in the repository (models/default, samples/), found from the binary's or the working folder upwards.</summary>
public static class RepositoryFiles
{
    /// <summary>The sample X-ray used when none is given (see samples/README.md for its source and licence).</summary>
    public const string DefaultSample = "samples/iu-2_1.png";

    /// <summary>The first existing <paramref name="relative"/> path above the CLI binary or the working folder, or null.</summary>
    public static string? Find(string relative)
    {
        foreach (string start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, relative);
                if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
            }
        return null;
    }

    public static string Sample() => Find(DefaultSample) ?? throw new XrayVLException($"{DefaultSample} not found: pass --image PATH");
}
