using System.Text;

namespace XrayVL.IO;

/// <summary>
/// Writes files and folders whole or not at all: everything is written under a temporary name beside the target and
/// renamed over it at the end, so a reader (or a run interrupted by Ctrl-C, a full disk or a crash) never sees half a
/// file. On failure the temporary file is removed and the old file, if any, is left as it was.
/// </summary>
public static class AtomicFile
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/> (creating its folder), then renames it into place.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        // Process id and a random part: two writers of one file (or a leftover of a crashed run) never share a temporary name.
        string temporary = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
                write(stream);
            File.Move(temporary, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); }
            catch (IOException) { /* best effort: the target is untouched either way */ }
            throw;
        }
    }

    /// <summary>UTF-8 text without a byte-order mark.</summary>
    public static void WriteAllText(string path, string text) => Write(path, stream =>
    {
        using var writer = new StreamWriter(stream, Utf8, leaveOpen: true);
        writer.Write(text);
    });

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, stream => stream.Write(bytes));

    /// <summary>One line per item, "\n" line ends, UTF-8; returns the number of lines.</summary>
    public static int WriteLines(string path, IEnumerable<string> lines)
    {
        int count = 0;
        Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, Utf8, leaveOpen: true) { NewLine = "\n" };
            foreach (string line in lines)
            {
                writer.WriteLine(line);
                count++;
            }
        });
        return count;
    }

    /// <summary>
    /// Moves the finished folder <paramref name="source"/> over <paramref name="target"/>: the old folder is renamed
    /// aside first and removed last, so at every moment one complete folder exists under one of the two names.
    /// </summary>
    public static void ReplaceDirectory(string source, string target)
    {
        // A unique name: a folder left by an interrupted save (or a reused process id) must not block this one.
        string old = target + ".old-" + Guid.NewGuid().ToString("N")[..12];
        bool hadOld = Directory.Exists(target);
        if (hadOld) Directory.Move(target, old);
        Directory.Move(source, target);
        if (hadOld) Directory.Delete(old, recursive: true);
    }
}
