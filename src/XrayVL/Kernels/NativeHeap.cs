using System.Runtime.InteropServices;

namespace XrayVL.Kernels;

/// <summary>
/// glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32 MB), after which blocks of
/// that size come from the heap and stay in the process when freed: converting or quantizing a model layer by layer then
/// leaves its transients resident, and peak RSS grows far past the weights. A fixed 1 MiB threshold keeps every large
/// block mmapped, so it goes back to the system when libtorch frees it.
/// </summary>
public static partial class NativeHeap
{
    private const int M_MMAP_THRESHOLD = -3;
    private static int applied;

    /// <summary>Sets the fixed threshold once per process (Linux with glibc; elsewhere nothing happens).</summary>
    public static void ReturnLargeBlocks()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref applied, 1) == 1) return;
        try { _ = mallopt(M_MMAP_THRESHOLD, 1 << 20); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }   // musl and others
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int param, int value);
}
