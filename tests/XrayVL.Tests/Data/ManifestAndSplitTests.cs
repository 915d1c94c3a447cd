using XrayVL.Tests.Support;
using XrayVL.Data;
using XrayVL.Data.Labeler;

namespace XrayVL.Tests.Data;

public class ManifestTests
{
    private static Study Sample(string id, string patient) => new()
    {
        StudyId = id,
        PatientId = patient,
        Images = [new StudyImage($"/data/{id}/0.png", Views.Frontal), new StudyImage($"/data/{id}/1.png", Views.Lateral)],
        Findings = "心脏增大。",
        Impression = "Cardiomegaly.",
        Language = "en",
        Labels = Labeler.Default.Label("Cardiomegaly. No effusion.", "en").ToDictionary(),
        Split = Splits.Train,
        Source = "test",
        Boxes = [new StudyBox(0, "Left Lung", 1.5, 2, 40, 90.5)],
        Notes = "fever",
        Meta = new Dictionary<string, string> { ["mesh"] = "Cardiomegaly" },
    };

    [Fact]
    public void WriteReadRoundTripWithSnakeCaseKeys()
    {
        using var t = new TempDir();
        string path = t.File("m/manifest.jsonl");
        var studies = new[] { Sample("a", "p1"), Sample("b", "p2") with { Boxes = null, Notes = null, Labels = null } };
        Assert.Equal(2, Manifest.Write(path, studies));
        string[] lines = File.ReadAllLines(path);
        Assert.Equal(2, lines.Length);
        Assert.Contains("\"study_id\":\"a\"", lines[0]);
        Assert.Contains("\"patient_id\":\"p1\"", lines[0]);
        Assert.Contains("\"Pleural Effusion\":0", lines[0]);
        Assert.Contains("\"Edema\":null", lines[0]);   // all 14 names are written, unmentioned as null
        Assert.Contains("心脏增大", lines[0]);          // Chinese stays readable
        Assert.DoesNotContain("boxes", lines[1]);

        var back = Manifest.Read(path);
        Assert.Equal(2, back.Count);
        var a = back[0];
        var original = studies[0];
        Assert.Equal(original.Images, a.Images);
        Assert.Equal(original.Boxes, a.Boxes);
        Assert.Equal(original.Labels!.ToList(), a.Labels!.ToList());
        Assert.Equal((original.Findings, original.Impression, original.Split, original.Notes), (a.Findings, a.Impression, a.Split, a.Notes));
        Assert.Equal("Cardiomegaly", a.Meta!["mesh"]);
        Assert.Null(back[1].Labels);
    }

    [Fact]
    public void ReadErrorsNameTheLine()
    {
        using var t = new TempDir();
        string good = "{\"study_id\":\"a\",\"patient_id\":\"p\",\"images\":[]}";
        string path = t.Write("m.jsonl", good + "\n\n{\"study_id\": \"b\", \"images\": [}\n");
        var e = Assert.Throws<XrayVLException>(() => Manifest.Read(path));
        Assert.StartsWith(path + ":3:", e.Message);

        File.WriteAllText(path, good + "\n{\"patient_id\":\"p\",\"images\":[]}\n");
        Assert.StartsWith(path + ":2:", Assert.Throws<XrayVLException>(() => Manifest.Read(path)).Message);
        File.WriteAllText(path, "{\"study_id\":\"a\",\"patient_id\":\"p\",\"labels\":{\"Edema\":3}}\n");
        Assert.Contains(":1: label 'Edema' is 3", Assert.Throws<XrayVLException>(() => Manifest.Read(path)).Message);
        File.WriteAllText(path, "{\"study_id\":\"a\",\"patient_id\":\"p\",\"labels\":{\"Flu\":1}}\n");
        Assert.Contains(":1: unknown label 'Flu'", Assert.Throws<XrayVLException>(() => Manifest.Read(path)).Message);
        Assert.Throws<XrayVLException>(() => Manifest.Read(t.File("absent.jsonl")));
    }

    [Fact]
    public void WriteIsAtomicWhenTheStudiesFailMidway()
    {
        using var t = new TempDir();
        string path = t.File("manifest.jsonl");
        Manifest.Write(path, [Sample("old", "p0")]);
        string before = File.ReadAllText(path);

        IEnumerable<Study> Failing()
        {
            yield return Sample("a", "p1");
            yield return Sample("b", "p2");
            throw new XrayVLException("source broke");
        }
        Assert.Throws<XrayVLException>(() => Manifest.Write(path, Failing()));
        Assert.Equal(before, File.ReadAllText(path));                     // the old manifest is untouched
        Assert.Equal([path], Directory.GetFiles(t.Path));                // no temporary file left behind

        string fresh = t.File("fresh.jsonl");
        Assert.Throws<XrayVLException>(() => Manifest.Write(fresh, Failing()));
        Assert.False(File.Exists(fresh));                                 // never a half-written new file
        Assert.Equal([path], Directory.GetFiles(t.Path));
    }
}

public class SplitTests
{
    private static List<Study> Studies(int patients, int studiesPerPatient = 2) =>
        Enumerable.Range(0, patients).SelectMany(p => Enumerable.Range(0, studiesPerPatient).Select(s => new Study
        {
            StudyId = $"s{p}-{s}",
            PatientId = $"p{p}",
            Images = [new StudyImage($"/img/{p}-{s}.png")],
        })).ToList();

    [Fact]
    public void NoPatientInTwoSplitsAndFractionsHold()
    {
        var split = Splits.ByPatient(Studies(1000), seed: 7, (0.8, 0.1, 0.1));
        Assert.Empty(Splits.PatientsInSeveralSplits(split));
        var patients = split.GroupBy(s => s.Split).ToDictionary(g => g.Key!, g => g.Select(s => s.PatientId).Distinct().Count());
        Assert.Equal((800, 100, 100), (patients["train"], patients["val"], patients["test"]));
    }

    [Fact]
    public void DeterministicForASeedAndIndependentOfOrder()
    {
        var studies = Studies(300);
        var a = Splits.ByPatient(studies, 42, (0.7, 0.15, 0.15)).ToDictionary(s => s.StudyId, s => s.Split);
        var b = Splits.ByPatient(studies, 42, (0.7, 0.15, 0.15)).ToDictionary(s => s.StudyId, s => s.Split);
        var shuffled = studies.OrderBy(s => s.StudyId.GetHashCode()).Reverse().ToList();
        var c = Splits.ByPatient(shuffled, 42, (0.7, 0.15, 0.15)).ToDictionary(s => s.StudyId, s => s.Split);
        var other = Splits.ByPatient(studies, 43, (0.7, 0.15, 0.15)).ToDictionary(s => s.StudyId, s => s.Split);
        Assert.Equal(a, b);
        Assert.Equal(a, c);
        Assert.NotEqual(a, other);
        // The patient sets differ between seeds but keep their sizes.
        Assert.Equal(a.Values.Count(v => v == "test"), other.Values.Count(v => v == "test"));
    }

    [Fact]
    public void PatientsSharingAnImageStayTogether()
    {
        // The COVID metadata lists some images under two patient ids.
        var studies = Studies(200, 1);
        studies.Add(new Study { StudyId = "dup", PatientId = "p-other", Images = [new StudyImage("/img/5-0.png")] });
        for (int seed = 0; seed < 20; seed++)
        {
            var split = Splits.ByPatient(studies, seed, (0.5, 0.25, 0.25));
            Assert.Equal(split.Single(s => s.StudyId == "s5-0").Split, split.Single(s => s.StudyId == "dup").Split);
        }
    }

    [Fact]
    public void OfficialSplitIsAppliedByStudyThenPatient()
    {
        var studies = new List<Study>
        {
            new() { StudyId = "CXR1", PatientId = "CXR1" },
            new() { StudyId = "1_2", PatientId = "CXR1" },
            new() { StudyId = "CXR9", PatientId = "CXR9" },
        };
        var applied = Splits.Apply(studies, new Dictionary<string, string> { ["CXR1"] = "test" });
        Assert.Equal(["test", "test", null], applied.Select(s => s.Split));
    }

    [Fact]
    public void BadFractionsAreRefused()
    {
        Assert.Throws<XrayVLException>(() => Splits.ByPatient(Studies(3), 0, (0.5, 0.5, 0.5)));
        Assert.Throws<XrayVLException>(() => Splits.ByPatient(Studies(3), 0, (1.2, -0.1, -0.1)));
        Assert.Equal("val", Splits.NormalizeName("validate"));
        Assert.Null(Splits.NormalizeName("holdout"));
    }
}
