using System.Runtime.InteropServices;

namespace XrayVL;

/// <summary>
/// Process-wide settings libtorch reads once, at start-up: call <see cref="Configure"/> before the first tensor.
/// </summary>
public static partial class TorchRuntime
{
    private static int configured;

    /// <summary>
    /// Sets OMP_WAIT_POLICY=PASSIVE unless the user chose a policy: with OpenMP's default spin-waiting, torch ran 10–20x
    /// slower on a busy 2-core machine (measured). It must reach the native environment (setenv) before libtorch starts
    /// its OpenMP runtime; .NET's Environment.SetEnvironmentVariable does not.
    /// </summary>
    public static void Configure()
    {
        if (Interlocked.Exchange(ref configured, 1) == 1) return;
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is { Length: > 0 }) return;
        _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
        Environment.SetEnvironmentVariable("OMP_WAIT_POLICY", "PASSIVE");
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
