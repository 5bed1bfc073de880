package dev.diffusionrt;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The repository's models and fixtures, as the Rust tests use them. */
final class Fixtures {
    private Fixtures() {}

    /** The repository root: the system property diffusionrt.repo (set by the runner), else ".". */
    static Path repo() {
        return Paths.get(System.getProperty("diffusionrt.repo", "."));
    }

    static String path(String relative) {
        return repo().resolve(relative).toString();
    }

    /** The backends to test: the system property diffusionrt.backends (e.g. "tract,ort"), else tract. */
    static List<String> backends() {
        List<String> out = new ArrayList<>();
        for (String b : System.getProperty("diffusionrt.backends", "tract").split(",")) {
            if (!b.isEmpty()) {
                out.add(b);
            }
        }
        return out;
    }

    static ModelOptions options(String backend) {
        return new ModelOptions().backend(backend).threads(1);
    }

    static Model digits(String backend) {
        return Model.load(path("models/digits"), options(backend));
    }

    /** A little-endian float32 or float64 .npy file's values as floats. */
    static float[] npy(String relative) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(repo().resolve(relative))).order(ByteOrder.LITTLE_ENDIAN);
        if (b.get(0) != (byte) 0x93 || b.get(1) != 'N') {
            throw new IOException(relative + " is not an .npy file");
        }
        int major = b.get(6);
        int headerLen = major == 1 ? b.getShort(8) & 0xffff : b.getInt(8);
        int start = (major == 1 ? 10 : 12);
        String header = new String(b.array(), start, headerLen, StandardCharsets.ISO_8859_1);
        b.position(start + headerLen);
        if (header.contains("'<f4'")) {
            float[] out = new float[b.remaining() / 4];
            b.asFloatBuffer().get(out);
            return out;
        }
        if (header.contains("'<f8'")) {
            double[] d = new double[b.remaining() / 8];
            b.asDoubleBuffer().get(d);
            float[] out = new float[d.length];
            for (int i = 0; i < d.length; i++) {
                out[i] = (float) d[i];
            }
            return out;
        }
        throw new IOException(relative + ": unsupported dtype in " + header);
    }

    /** The numbers of the {@code key} array of the golden case {@code name} in tests/fixtures/golden/index.json. */
    static double[] goldenArray(String name, String key) throws IOException {
        String index = new String(Files.readAllBytes(repo().resolve("tests/fixtures/golden/index.json")), StandardCharsets.UTF_8);
        int at = index.indexOf("\"name\": \"" + name + "\"");
        if (at < 0) {
            throw new IOException("no golden case " + name);
        }
        Matcher m = Pattern.compile("\"" + key + "\":\\s*\\[([^\\]]*)\\]").matcher(index);
        if (!m.find(at)) {
            throw new IOException(name + " has no " + key);
        }
        String[] parts = m.group(1).split(",");
        double[] out = new double[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = Double.parseDouble(parts[i].trim());
        }
        return out;
    }

    /** Relative L2 distance |a - b| / |b|. */
    static double relL2(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new AssertionError("lengths " + a.length + " and " + b.length);
        }
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            double d = (double) a[i] - b[i];
            num += d * d;
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num / den);
    }
}
