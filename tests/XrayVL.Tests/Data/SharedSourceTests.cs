using StbImageSharp;
using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Data;

/// <summary>The source readers on the real files in ../shared/data (counts checked against the files themselves).</summary>
public class SharedSourceTests
{
    private static string Iu(params string[] parts) => SharedData.File(["iu-xray", .. parts]);

    [Fact]
    public void IuCsvJoinsReportsAndProjections()
    {
        var r = new IuCsvSource().Read(new SourceOptions { Input = Iu() });
        Assert.Equal(3851, r.Records);
        Assert.Equal(25, r.EmptyReports);              // neither findings nor impression: counted, listed, left out
        Assert.Equal(3826, r.Studies.Count);
        Assert.Contains("CXR16", r.EmptyReportExamples[0]);
        Assert.False(r.ImagesChecked);
        Assert.Equal(0, r.MissingImages);
        // Every projection row lands in a study, except those of the 25 empty reports.
        var projections = IuProjections.Load(Iu("iu_projections.csv"));
        Assert.Equal(7466, projections.Rows);
        var kept = r.Studies.Select(s => s.StudyId[3..]).ToHashSet();
        int imagesOfSkipped = File.ReadLines(Iu("iu_projections.csv")).Skip(1).Count(l => !kept.Contains(l.Split(',')[0]));
        Assert.Equal(7466 - imagesOfSkipped, r.Images);

        var cxr1 = r.Studies.Single(s => s.StudyId == "CXR1");
        Assert.Equal("CXR1", cxr1.PatientId);
        Assert.Equal(["1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png"], cxr1.Images.Select(i => i.Path));
        Assert.Equal([Views.Frontal, Views.Lateral], cxr1.Images.Select(i => i.View));
        Assert.Equal("Normal chest x-ray.", cxr1.Impression);
        Assert.Equal("Positive TB test", cxr1.Indication);
        Assert.Equal("normal", cxr1.Meta!["mesh"]);
        Assert.DoesNotContain(r.Studies, s => s.Findings.Contains("XXXX") || s.Impression.Contains("XXXX"));
    }

    [Fact]
    public void IuCsvCountsMissingImagesAndFindsXrayGlmNames()
    {
        var r = new IuCsvSource().Read(new SourceOptions { Input = Iu("iu_reports.csv"), Images = Iu("images") });
        Assert.True(r.ImagesChecked);
        // The folder holds 2_1, 2_2, 2577_1, 2882_1 and 861_1 (XrayGLM's N_k names for the k-th projection).
        Assert.Equal(5, r.Images);
        Assert.Equal(4, r.Studies.Count);
        Assert.Equal(7426 - 5, r.MissingImages);
        Assert.Equal(3826 - 4, r.StudiesWithoutImages);
        Assert.Equal(10, r.MissingImageExamples.Count);
        Assert.All(r.MissingImageExamples, p => Assert.False(File.Exists(p)));
        var cxr2 = r.Studies.Single(s => s.StudyId == "CXR2");
        Assert.Equal([Iu("images", "2_1.png"), Iu("images", "2_2.png")], cxr2.Images.Select(i => i.Path));
        Assert.Single(r.Studies.Single(s => s.StudyId == "CXR861").Images);  // 861_2 is missing: left out, counted

        var kept = new IuCsvSource().Read(new SourceOptions { Input = Iu(), Images = Iu("images"), KeepMissingImages = true });
        Assert.Equal(3826, kept.Studies.Count);
        Assert.Equal(7426, kept.Images);
        Assert.Equal(7421, kept.MissingImages);
    }

    [Fact]
    public void XrayGlmCaptionsJoinTheIuStudies()
    {
        var en = new XrayGlmSource().Read(new SourceOptions { Input = Iu("openi-en.json") });
        var zh = new XrayGlmSource().Read(new SourceOptions { Input = Iu("openi-zh.json"), Images = Iu("images") });
        Assert.Equal(6423, en.Records);
        Assert.Equal(6423, zh.Records);
        Assert.Equal(6423, en.Studies.Count);
        Assert.Equal(2, zh.EmptyReports);  // two Chinese captions are empty in the published file
        Assert.All(en.Studies, s => Assert.Equal("en", s.Language));
        Assert.Contains(en.Warnings, w => w.StartsWith("4 ids"));  // 2560_4, 3809_3, 2084_3, 2084_4 have no such projection

        var s21 = en.Studies.Single(s => s.StudyId == "2_1");
        var s22 = en.Studies.Single(s => s.StudyId == "2_2");
        Assert.Equal("CXR2", s21.PatientId);
        Assert.Equal(("2_IM-0652-1001.dcm.png", Views.Frontal), (s21.Images[0].Path, s21.Images[0].View));
        Assert.Equal(("2_IM-0652-2001.dcm.png", Views.Lateral), (s22.Images[0].Path, s22.Images[0].View));
        Assert.Equal(3313, en.Studies.Select(s => s.PatientId).Distinct().Count());

        Assert.Equal(5, zh.Studies.Count);  // only the five images on disk remain
        Assert.All(zh.Studies, s => Assert.Equal("zh", s.Language));
        Assert.Equal(Iu("images", "2882_1.png"), zh.Studies.Single(s => s.StudyId == "2882_1").Images[0].Path);

        var both = new XrayGlmSource().Read(new SourceOptions { Input = Iu() });
        Assert.Equal(12844, both.Studies.Count);
        Assert.Equal(both.Studies.Count, both.Studies.Select(s => s.StudyId).Distinct().Count());
    }

    [Fact]
    public void R2GenAnnotationGivesTheSplit()
    {
        var r = new R2GenSource().Read(new SourceOptions { Input = Iu("splits", "r2gen-annotation.json") });
        var sizes = r.Studies.GroupBy(s => s.Split!).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(2069, sizes["train"]);
        Assert.Equal(296, sizes["val"]);
        Assert.Equal(590, sizes["test"]);
        Assert.Equal(5910, r.Images);
        var s = r.Studies.Single(x => x.StudyId == "CXR2384");
        Assert.Equal("CXR2384_IM-0942/0.png", s.Images[0].Path);
        Assert.StartsWith("The heart size and pulmonary vascularity appear within normal limits.", s.Findings);

        // MRG-RL's annotation names the IU files, so views come from the projections one folder up.
        var mrg = new R2GenSource().Read(new SourceOptions { Input = Iu("splits", "mrg-rl-annotation.json") });
        Assert.Equal((3062, 382, 382), (mrg.Studies.Count(x => x.Split == "train"), mrg.Studies.Count(x => x.Split == "val"), mrg.Studies.Count(x => x.Split == "test")));
        // Four of its 7,430 file names are not in iu_projections.csv (e.g. CXR2560_IM-1064-4001.png): view unknown.
        Assert.Equal(4, mrg.Studies.SelectMany(x => x.Images).Count(i => i.View == null));
        Assert.Empty(Splits.PatientsInSeveralSplits(mrg.Studies));
    }

    [Fact]
    public void CovidMetadataWithLabelsNotesAndLungBoxes()
    {
        var r = new CovidSource().Read(new SourceOptions { Input = SharedData.File("covid-chestxray") });
        Assert.Equal(653, r.Records);
        Assert.Equal(653, r.Studies.Count);
        Assert.Equal(0, r.MissingImages);
        Assert.Equal(351, r.Studies.Select(s => s.PatientId).Distinct().Count());
        Assert.Equal(542, r.Studies.Count(s => s.Notes != null));
        Assert.Contains(r.Warnings, w => w.StartsWith("5 images are listed under two patient ids"));

        // Diagnosis → labels.
        static string Finding(Study s) => s.Meta!["finding"];
        Assert.All(r.Studies.Where(s => Finding(s) == "No Finding"), s => Assert.Equal(1, s.Labels!["No Finding"]));
        Assert.Equal(19, r.Studies.Count(s => s.Labels!["No Finding"] == 1));
        Assert.All(r.Studies.Where(s => Finding(s) is not ("No Finding" or "todo" or "ARDS")), s => Assert.Equal(1, s.Labels!["Pneumonia"]));
        Assert.All(r.Studies.Where(s => Finding(s).Contains("ARDS")), s => Assert.Equal(1, s.Labels!["Lung Opacity"]));

        // Lung boxes: on the 0–100 grid, ordered corners; one checked by hand from the COCO box [42, 72, 245, 504] on 882×888.
        var boxed = r.Studies.Where(s => s.Boxes is { Count: > 0 }).ToList();
        Assert.Equal(152, boxed.Count);
        Assert.All(boxed.SelectMany(s => s.Boxes!), b => Assert.True(b.X1 >= 0 && b.X1 < b.X2 && b.X2 <= 100 && b.Y1 >= 0 && b.Y1 < b.Y2 && b.Y2 <= 100));
        var first = r.Studies.Single(s => s.StudyId == "covid-2-auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus");
        var right = first.Boxes!.Single(b => b.Label == "Right Lung");
        Assert.Equal((4.8, 8.1, 32.5, 64.9), (right.X1, right.Y1, right.X2, right.Y2));
        Assert.Equal(Views.PA, first.Images[0].View);
    }

    [Fact]
    public void JpegHeaderSizeMatchesAFullDecode()
    {
        var files = Directory.GetFiles(SharedData.File("covid-chestxray", "images"), "*.jpg").Order().Take(8);
        foreach (string f in files)
        {
            var decoded = ImageResult.FromMemory(File.ReadAllBytes(f), ColorComponents.Grey);
            Assert.Equal((decoded.Width, decoded.Height), JpegSize.Read(f));
        }
        using var tmp = new TempDir();
        Assert.Null(JpegSize.Read(tmp.Write("not.jpg", "plain text")));
    }
}
