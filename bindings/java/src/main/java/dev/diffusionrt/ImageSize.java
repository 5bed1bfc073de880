package dev.diffusionrt;

/** What a Stable Diffusion request makes: {@code batch} images of {@code width × height} pixels. */
public final class ImageSize {
    public final int width;
    public final int height;
    public final int batch;

    ImageSize(int width, int height, int batch) {
        this.width = width;
        this.height = height;
        this.batch = batch;
    }

    @Override
    public String toString() {
        return batch + " × " + width + "×" + height;
    }
}
