namespace XrayVL;

/// <summary>
/// An error a user can act on: bad input, a missing or mismatched file, an invalid config.
/// The message is one line that names the file or value at fault; front ends print it without a stack trace.
/// </summary>
public class XrayVLException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// An invariant of XrayVL's own code failed (mismatched shapes between its parts, a cache used out of its bounds):
/// a bug to report, never something the user's input caused. Front ends say so instead of presenting it as a user
/// error: the CLI prints "internal error" with how to report it, the server answers 500.
/// </summary>
public sealed class XrayVLBugException(string message) : Exception(message);
