namespace XrayVL;

/// <summary>
/// An error a user can act on: bad input, a missing or mismatched file, an invalid config.
/// The message is one line that names the file or value at fault; front ends print it without a stack trace.
/// </summary>
public class XrayVLException(string message, Exception? inner = null) : Exception(message, inner);
