namespace XrayVL.Tests.Support;

/// <summary>
/// Temporary folders for tests. <see cref="Create"/> makes one that is removed when the test process exits;
/// an instance is a folder for fixture trees, removed on dispose, with helpers to write files into it.
/// </summary>
public sealed class TempDir : IDisposable
{
    private static readonly List<string> Created = [];

    static TempDir() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        lock (Created)
            foreach (string dir in Created)
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    };

    public static string Create(string prefix)
    {
        string dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        lock (Created) Created.Add(dir);
        return dir;
    }

    public TempDir(string prefix = "xrayvl-data") => Path = Create(prefix);

    public string Path { get; }

    /// <summary>Writes a file under the folder (creating its folders) and returns its full path.</summary>
    public string Write(string relative, string text)
    {
        string full = File(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllText(full, text);
        return full;
    }

    public string WriteBytes(string relative, byte[] bytes)
    {
        string full = File(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllBytes(full, bytes);
        return full;
    }

    public string File(string relative) => System.IO.Path.Combine(Path, relative);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
