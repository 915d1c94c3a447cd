using System.IO.Compression;
using System.Text;

namespace XrayVL.Data;

/// <summary>One CSV record: values by column name, and the line it started on (for error messages).</summary>
public sealed class CsvRow(IReadOnlyDictionary<string, int> columns, string[] values, int line)
{
    public int Line { get; } = line;

    /// <summary>The value of a column, or "" when the column is absent or the row is short.</summary>
    public string this[string column] => columns.TryGetValue(column, out int i) && i < values.Length ? values[i] : "";

    public bool Has(string column) => columns.ContainsKey(column);
}

/// <summary>
/// A small RFC 4180 reader: quoted fields with "" escapes and line breaks inside quotes; first record is the header;
/// lines starting with "##" before the header are skipped (comment lines in some published CSVs); ".gz" files are
/// decompressed on the fly.
/// </summary>
public static class Csv
{
    public static IEnumerable<CsvRow> Read(string path, params string[] requiredColumns)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        using var stream = OpenText(path);
        string[]? header = null;
        Dictionary<string, int>? columns = null;
        int line = 1;
        while (true)
        {
            int startLine = line;
            var record = ReadRecord(stream, ref line, path);
            if (record == null) break;
            if (header == null)
            {
                if (record[0].StartsWith("##")) continue;
                if (record.Length == 1 && record[0].Length == 0) continue;
                header = record.Select(h => h.Trim().TrimStart('\uFEFF')).ToArray();
                columns = new Dictionary<string, int>(StringComparer.Ordinal);
                for (int i = 0; i < header.Length; i++) columns.TryAdd(header[i], i);
                foreach (string c in requiredColumns)
                {
                    if (!columns.ContainsKey(c))
                        throw new XrayVLException($"{path}:{startLine}: missing column '{c}' (header has: {string.Join(", ", header)})");
                }
                continue;
            }
            if (record.Length == 1 && record[0].Length == 0) continue;  // blank line
            yield return new CsvRow(columns!, record, startLine);
        }
        if (header == null) throw new XrayVLException($"{path}: empty CSV file (no header)");
    }

    public static TextReader OpenText(string path)
    {
        Stream s = File.OpenRead(path);
        if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) s = new GZipStream(s, CompressionMode.Decompress);
        return new StreamReader(s, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
    }

    private static string[]? ReadRecord(TextReader reader, ref int line, string path)
    {
        int c = reader.Peek();
        if (c < 0) return null;
        var fields = new List<string>();
        var field = new StringBuilder();
        bool quoted = false, wasQuoted = false;
        int startLine = line;
        while (true)
        {
            c = reader.Read();
            if (c < 0)
            {
                if (quoted) throw new XrayVLException($"{path}:{startLine}: unterminated quoted field");
                fields.Add(field.ToString());
                return fields.ToArray();
            }
            char ch = (char)c;
            if (quoted)
            {
                if (ch == '"')
                {
                    if (reader.Peek() == '"') { reader.Read(); field.Append('"'); }
                    else quoted = false;
                }
                else
                {
                    if (ch == '\n') line++;
                    field.Append(ch);
                }
                continue;
            }
            switch (ch)
            {
                case '"' when field.Length == 0 && !wasQuoted:
                    quoted = wasQuoted = true;
                    break;
                case ',':
                    fields.Add(field.ToString());
                    field.Clear();
                    wasQuoted = false;
                    break;
                case '\r':
                    break;
                case '\n':
                    line++;
                    fields.Add(field.ToString());
                    return fields.ToArray();
                default:
                    field.Append(ch);
                    break;
            }
        }
    }
}
