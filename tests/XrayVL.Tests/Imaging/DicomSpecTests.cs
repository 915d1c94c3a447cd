using System.Reflection;
using System.Text;
using XrayVL.Imaging;

namespace XrayVL.Tests.Imaging;

/// <summary>
/// The reader against bytes encoded by hand from PS3.5 / PS3.10 (not by <see cref="DicomWriter"/>), and the promise that
/// patient-identifying values never leave the reader.
/// </summary>
public class DicomSpecTests
{
    private static byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);

    /// <summary>
    /// Part-10 file, explicit VR little endian: an undefined-length sequence whose undefined-length item holds a nested
    /// defined-length sequence, an odd-length PN value, a UN element of undefined length whose content is implicit VR
    /// (PS3.5 6.2.2), multi-valued window attributes, MONOCHROME1, 12 of 16 bits stored with garbage above them.
    /// </summary>
    [Fact]
    public void HandEncodedExplicitVrFile()
    {
        var f = new MemoryStream();
        f.Write(new byte[128]);
        f.Write(Ascii("DICM"));
        // File meta: (0002,0000) UL group length = 14 + 28 = 42; (0002,0001) OB 00 01; (0002,0010) UI, NUL-padded to 20.
        f.Write([0x02, 0x00, 0x00, 0x00, (byte)'U', (byte)'L', 0x04, 0x00, 42, 0, 0, 0]);
        f.Write([0x02, 0x00, 0x01, 0x00, (byte)'O', (byte)'B', 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
        f.Write([0x02, 0x00, 0x10, 0x00, (byte)'U', (byte)'I', 20, 0x00]);
        f.Write(Ascii("1.2.840.10008.1.2.1\0"));
        // (0008,0060) Modality CS "DX"
        f.Write([0x08, 0x00, 0x60, 0x00, (byte)'C', (byte)'S', 0x02, 0x00, (byte)'D', (byte)'X']);
        // (0008,1032) SQ, reserved 2 bytes, undefined length; item of undefined length
        f.Write([0x08, 0x00, 0x32, 0x10, (byte)'S', (byte)'Q', 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.Write([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        //   (0008,0100) SH "71046 "
        f.Write([0x08, 0x00, 0x00, 0x01, (byte)'S', (byte)'H', 0x06, 0x00]);
        f.Write(Ascii("71046 "));
        //   (0008,0121) SQ of defined length 18: one item of defined length 10 holding (0008,0104) LO "XR"
        f.Write([0x08, 0x00, 0x21, 0x01, (byte)'S', (byte)'Q', 0x00, 0x00, 18, 0x00, 0x00, 0x00]);
        f.Write([0xFE, 0xFF, 0x00, 0xE0, 10, 0x00, 0x00, 0x00]);
        f.Write([0x08, 0x00, 0x04, 0x01, (byte)'L', (byte)'O', 0x02, 0x00, (byte)'X', (byte)'R']);
        //   item delimiter, sequence delimiter
        f.Write([0xFE, 0xFF, 0x0D, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        f.Write([0xFE, 0xFF, 0xDD, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        // (0010,0010) PN with an odd length of 5 (non-conformant; must still be skipped by its length)
        f.Write([0x10, 0x00, 0x10, 0x00, (byte)'P', (byte)'N', 0x05, 0x00]);
        f.Write(Ascii("Doe^J"));
        // (0018,5101) ViewPosition CS "PA"
        f.Write([0x18, 0x00, 0x01, 0x51, (byte)'C', (byte)'S', 0x02, 0x00, (byte)'P', (byte)'A']);
        // (0019,1001) UN, undefined length: a sequence encoded in implicit VR
        f.Write([0x19, 0x00, 0x01, 0x10, (byte)'U', (byte)'N', 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.Write([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.Write([0x19, 0x00, 0x02, 0x10, 0x04, 0x00, 0x00, 0x00, (byte)'A', (byte)'B', (byte)'C', (byte)'D']);
        f.Write([0xFE, 0xFF, 0x0D, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        f.Write([0xFE, 0xFF, 0xDD, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        // Image pixel module: SamplesPerPixel 1, MONOCHROME1, 2 rows, 3 columns, 16 allocated, 12 stored, high bit 11, unsigned
        f.Write([0x28, 0x00, 0x02, 0x00, (byte)'U', (byte)'S', 0x02, 0x00, 0x01, 0x00]);
        f.Write([0x28, 0x00, 0x04, 0x00, (byte)'C', (byte)'S', 12, 0x00]);
        f.Write(Ascii("MONOCHROME1 "));
        f.Write([0x28, 0x00, 0x10, 0x00, (byte)'U', (byte)'S', 0x02, 0x00, 0x02, 0x00]);
        f.Write([0x28, 0x00, 0x11, 0x00, (byte)'U', (byte)'S', 0x02, 0x00, 0x03, 0x00]);
        f.Write([0x28, 0x00, 0x00, 0x01, (byte)'U', (byte)'S', 0x02, 0x00, 16, 0x00]);
        f.Write([0x28, 0x00, 0x01, 0x01, (byte)'U', (byte)'S', 0x02, 0x00, 12, 0x00]);
        f.Write([0x28, 0x00, 0x02, 0x01, (byte)'U', (byte)'S', 0x02, 0x00, 11, 0x00]);
        f.Write([0x28, 0x00, 0x03, 0x01, (byte)'U', (byte)'S', 0x02, 0x00, 0x00, 0x00]);
        // VOI LUT: WindowCenter "100\200 ", WindowWidth "201\400 "; modality LUT: intercept "-24 ", slope "2 "
        f.Write([0x28, 0x00, 0x50, 0x10, (byte)'D', (byte)'S', 0x08, 0x00]);
        f.Write(Ascii("100\\200 "));
        f.Write([0x28, 0x00, 0x51, 0x10, (byte)'D', (byte)'S', 0x08, 0x00]);
        f.Write(Ascii("201\\400 "));
        f.Write([0x28, 0x00, 0x52, 0x10, (byte)'D', (byte)'S', 0x04, 0x00]);
        f.Write(Ascii("-24 "));
        f.Write([0x28, 0x00, 0x53, 0x10, (byte)'D', (byte)'S', 0x02, 0x00]);
        f.Write(Ascii("2 "));
        // (7FE0,0010) OW, 12 bytes: 12, 50, 62, 100, 112, 0xF03E (0x03E = 62 under a garbage high nibble)
        f.Write([0xE0, 0x7F, 0x10, 0x00, (byte)'O', (byte)'W', 0x00, 0x00, 12, 0x00, 0x00, 0x00]);
        f.Write([12, 0, 50, 0, 62, 0, 100, 0, 112, 0, 0x3E, 0xF0]);

        var image = ImageFile.Decode(f.ToArray(), "hand.dcm");
        // x = 2v − 24 = 0, 76, 100, 176, 200, 100. Window c = 100, w = 201: x ≤ −0.5 → 0, x > 199.5 → 1,
        // else (x − 99.5)/200 + 0.5 = 0.0025, 0.3825, 0.5025, 0.8825, 1, 0.5025; MONOCHROME1 → 1 − y.
        double[] expected = [0.9975, 0.6175, 0.4975, 0.1175, 0, 0.4975];
        Assert.Equal((3, 2), (image.Width, image.Height));
        for (int i = 0; i < 6; i++) Assert.Equal(expected[i], image.Pixels[i], 1e-6);
        Assert.Equal("PA", image.Source.ViewPosition);
        Assert.Equal("DX", image.Source.Modality);
        Assert.Equal(12, image.Source.BitDepth);
    }

    /// <summary>A bare implicit-VR data set (no preamble, no meta), 8-bit MONOCHROME2, no window: the percentile window
    /// over 6 pixels takes ranks ⌊0.005·5⌋ = 0 and ⌈0.995·5⌉ = 5, i.e. the minimum 0 and maximum 250.</summary>
    [Fact]
    public void HandEncodedImplicitVrDataSetWithoutPreamble()
    {
        var f = new MemoryStream();
        // Implicit VR: tag, 4-byte length, value.
        f.Write([0x08, 0x00, 0x60, 0x00, 0x02, 0x00, 0x00, 0x00, (byte)'C', (byte)'R']);
        // (0008,1032) sequence of undefined length, one undefined-length item, empty second item of defined length 0
        f.Write([0x08, 0x00, 0x32, 0x10, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.Write([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.Write([0x08, 0x00, 0x00, 0x01, 0x06, 0x00, 0x00, 0x00]);
        f.Write(Ascii("71046 "));
        f.Write([0xFE, 0xFF, 0x0D, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        f.Write([0xFE, 0xFF, 0x00, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        f.Write([0xFE, 0xFF, 0xDD, 0xE0, 0x00, 0x00, 0x00, 0x00]);
        // (0010,0010) odd length 5
        f.Write([0x10, 0x00, 0x10, 0x00, 0x05, 0x00, 0x00, 0x00]);
        f.Write(Ascii("Doe^J"));
        f.Write([0x28, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00]);
        f.Write([0x28, 0x00, 0x04, 0x00, 12, 0x00, 0x00, 0x00]);
        f.Write(Ascii("MONOCHROME2 "));
        f.Write([0x28, 0x00, 0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00]);
        f.Write([0x28, 0x00, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00]);
        f.Write([0x28, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 8, 0x00]);
        f.Write([0x28, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 8, 0x00]);
        f.Write([0x28, 0x00, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 7, 0x00]);
        f.Write([0x28, 0x00, 0x03, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00]);
        f.Write([0xE0, 0x7F, 0x10, 0x00, 0x06, 0x00, 0x00, 0x00, 0, 10, 20, 30, 40, 250]);

        byte[] bytes = f.ToArray();
        Assert.Equal(ImageFormat.Dicom, ImageFile.Sniff(bytes));
        var image = ImageFile.Decode(bytes, "bare.dcm");
        Assert.Equal([0f, 0.04f, 0.08f, 0.12f, 0.16f, 1f], image.Pixels.Select(v => MathF.Round(v, 6)).ToArray());
        Assert.False(Dicom.ReadDataset(bytes, "bare.dcm").ExplicitVr);
    }

    /// <summary>
    /// Pieces of the patient attributes an output must not contain. The patient ID is matched with its letters
    /// ("4471-XZ", "PID-4471"): its bare digits turn up inside numbers of honest error messages now and then (a mutated
    /// element length of 34471934 bytes did once).
    /// </summary>
    private static readonly string[] Secrets = ["Doe", "Jane", "Quincy", "PID-4471", "4471-XZ", "19450312"];

    private static DicomWriteOptions WithPatient(bool explicitVr) => new()
    {
        ExplicitVr = explicitVr, BitsStored = 12, PatientName = "Doe^Jane^Quincy", PatientId = "PID-4471-XZ",
        PatientBirthDate = "19450312", IncludeSequences = true, ViewPosition = "AP", WindowCenter = [1000], WindowWidth = [2000],
    };

    private static void AssertNoSecret(string text, string where)
    {
        foreach (string secret in Secrets) Assert.False(text.Contains(secret, StringComparison.Ordinal), $"{where} leaks '{secret}': {text}");
    }

    [Fact]
    public void PatientAttributesNeverReachResultsOrToString()
    {
        foreach (bool explicitVr in new[] { true, false })
        {
            byte[] file = DicomWriter.WriteNative(4, 4, Enumerable.Range(0, 16).Select(i => i * 200).ToArray(), WithPatient(explicitVr));
            Assert.True(file.AsSpan().IndexOf("Doe^Jane"u8) > 0);   // the name is in the file
            var ds = Dicom.ReadDataset(file, "leak.dcm");
            var image = ImageFile.Decode(file, "leak.dcm");
            AssertNoSecret(ds.ToString(), "DicomDataset.ToString");
            AssertNoSecret(image.ToString(), "GrayImage.ToString");
            AssertNoSecret(image.Source.ToString(), "ImageSourceInfo.ToString");
            // Every field, public or not, of the objects the reader returns.
            foreach (object holder in new object[] { ds, image, image.Source })
                foreach (var field in holder.GetType().GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
                    if (field.GetValue(holder) is string s) AssertNoSecret(s, $"{holder.GetType().Name}.{field.Name}");
        }
    }

    /// <summary>Every truncation of the file and thousands of random mutations: no error message names the patient.</summary>
    [Fact]
    public void PatientAttributesNeverReachErrorMessages()
    {
        var random = new Random(4471);
        int errors = 0;
        foreach (bool explicitVr in new[] { true, false })
        {
            byte[] file = DicomWriter.WriteNative(4, 4, Enumerable.Range(0, 16).Select(i => i * 200).ToArray(), WithPatient(explicitVr));
            var inputs = Enumerable.Range(0, file.Length).Select(n => file[..n]).ToList();
            for (int i = 0; i < 1500; i++) inputs.Add(Mutations.Mutate(file, random, hotRegion: file.Length - 32));
            foreach (byte[] input in inputs)
            {
                try
                {
                    var image = ImageFile.Decode(input, "leak.dcm");
                    AssertNoSecret(image.ToString(), "GrayImage.ToString of a mutated file");
                }
                catch (XrayVLException e)
                {
                    errors++;
                    AssertNoSecret(ImagingFixtures.AllMessages(e), "error message");
                }
            }
        }
        Assert.True(errors > 1000, $"only {errors} inputs were refused");
    }
}
